"""Stages killed at a few dozen points (SIGKILL, in a subprocess) across export, optimize and
quantize of a small model: the previous package stays intact and loadable, and a rerun cleans up
and completes. The figures are printed for the README's "Reliability" section."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

import edgeai
from edgeai.package import Package

pytestmark = pytest.mark.slow
torch = pytest.importorskip("torch")

FACTORY = textwrap.dedent("""
    import torch

    def make():
        torch.manual_seed(0)
        return torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
                                   torch.nn.Flatten(), torch.nn.Linear(8, 4))
""")
POINTS = {"export": 12, "optimize": 8, "quantize": 12}


def _edgeai(*args: str) -> subprocess.Popen:
    exe = Path(sys.executable).with_name("edgeai")
    return subprocess.Popen([str(exe), *args], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
                            start_new_session=True)


def _files(pkg: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(pkg.iterdir()) if p.is_file()}


def _complete(pkg: Path) -> None:
    """Every variant the manifest names is there, matches its hash, and runs."""
    p = Package.open(pkg)
    x = np.ones((2, 3, 12, 12), np.float32)
    for name in p.variants:
        assert edgeai.load(pkg, variant=name, provider="cpu").run({"x": x})["output"].shape == (2, 4)


def _debris(folder: Path) -> list[str]:
    """Temporary siblings and files of killed runs, and files the manifest does not name."""
    found = [p.name for p in folder.parent.iterdir() if p.name.startswith(f".{folder.name}.edgeai-tmp-")]
    m = Package.open(folder).manifest
    named = {"manifest.json", *(v["file"] for v in m["variants"].values()), *m.get("assets", {})}
    return found + [p.name for p in folder.iterdir() if p.name not in named]


def _timed(*args: str) -> float:
    t = time.perf_counter()
    proc = _edgeai(*args)
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err.decode()[-2000:]
    return time.perf_counter() - t


def _kill_at(args: tuple[str, ...], delay: float) -> float | None:
    """Run, SIGKILL the whole process group after ``delay`` s; None if killed, else the seconds
    the run took (it finished first)."""
    t = time.perf_counter()
    proc = _edgeai(*args)
    try:
        proc.wait(timeout=delay)
        return time.perf_counter() - t
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        return None


def _landed(shares, duration: float, attempt, retries: int):
    """Yield each share of ``duration`` at which ``attempt(delay)`` landed its signal (it returns
    None then, else the seconds the run took). The timed run is only an estimate: under a second
    test worker, or with the page cache warm, a rerun can take half as long, and the late points
    would miss. So a run that finishes before its signal gives a new, shorter duration, and its
    point is tried again on it, ``retries`` times at most in all, so that this cannot loop."""
    queue = list(shares)
    while queue:
        share = queue.pop(0)
        took = attempt(max(0.05, float(share * duration)))
        if took is None:
            yield share
            continue
        duration = min(duration, took)
        if retries:
            retries -= 1
            queue.insert(0, share)


def test_stages_killed_at_a_few_dozen_points_leave_the_package_intact(tmp_path, capsys, own_tmpdir):
    (tmp_path / "net.py").write_text(FACTORY)
    pkg = tmp_path / "pkg"
    export = ("export", f"{tmp_path / 'net.py'}:make", "--input", "x:2,3,12,12:float32", "--dynamic", "x:0:batch",
              "--precision", "int8", "-o", str(pkg))
    durations = {"export": _timed(*export)}
    _complete(pkg)
    stages = {"export": export, "optimize": ("optimize", str(pkg)), "quantize": ("quantize", str(pkg), "--method", "dynamic")}
    durations["optimize"] = _timed(*stages["optimize"])
    durations["quantize"] = _timed(*stages["quantize"])
    rng = np.random.default_rng(0)
    killed = {s: 0 for s in stages}
    for stage, args in stages.items():
        # spread over the whole run (imports, export, validation, quantization, timing, writing),
        # to 0.8 of it, not its end; each point tried once more where the run finished first
        fractions = np.linspace(0.15, 0.8, POINTS[stage]) + rng.uniform(-0.02, 0.02, POINTS[stage])
        before = {}

        def attempt(delay: float, args=args) -> float | None:
            before.clear()
            before.update(_files(pkg))  # what a landed kill must leave as it was, or replace whole
            return _kill_at(args, delay)

        for share in _landed(fractions, durations[stage], attempt, retries=POINTS[stage]):
            killed[stage] += 1
            after = {k: v for k, v in _files(pkg).items() if ".edgeai-tmp-" not in k}
            if after.get("manifest.json") == before["manifest.json"]:
                # the old manifest: every file it names is unchanged
                m = Package.open(pkg).manifest
                for v in m["variants"].values():
                    assert after[v["file"]] == before[v["file"]], (stage, share)
            _complete(pkg)  # old or new, the package is whole and loadable
        # a rerun removes what the kills left and completes
        _timed(*args)
        _complete(pkg)
        assert _debris(pkg) == [], (stage, _debris(pkg))
    total = sum(killed.values())
    assert total >= 24, killed
    with capsys.disabled():
        print(f"\n[reliability] kills: {total} SIGKILLs survived (export {killed['export']}, optimize {killed['optimize']}, "
              f"quantize {killed['quantize']}; full runs {durations['export']:.1f}/{durations['optimize']:.1f}/"
              f"{durations['quantize']:.1f} s): previous package intact and loadable each time, reruns completed, no debris")


def test_sigterm_cleans_up_on_the_way_out(tmp_path, own_tmpdir):
    """SIGTERM (``kill``, ``timeout``, a service stopping) is not SIGKILL: the command says so,
    exits 143, and takes its staging folder and temporary files with it, nothing left to clean."""
    (tmp_path / "net.py").write_text(FACTORY)
    pkg = tmp_path / "pkg"
    _timed("export", f"{tmp_path / 'net.py'}:make", "--input", "x:2,3,12,12:float32", "--dynamic", "x:0:batch", "-o", str(pkg))
    args = ("quantize", str(pkg), "--method", "dynamic")
    before = {p.name for p in own_tmpdir.iterdir()}
    duration = _timed(*args)
    proc = None

    def attempt(delay: float) -> float | None:
        nonlocal proc
        t = time.perf_counter()
        proc = _edgeai(*args, "--replace")
        try:
            proc.wait(timeout=delay)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGTERM)  # the process only, as `kill PID` does
        proc.err = proc.communicate(timeout=60)[1].decode()
        return time.perf_counter() - t if proc.returncode == 0 else None

    terminated = 0
    # past the imports (the handler is set first thing in main), well before the end
    for share in _landed([0.3, 0.5, 0.7], duration, attempt, retries=3):
        terminated += 1
        assert proc.returncode == 143, proc.err[-2000:]
        assert proc.err.strip().splitlines()[-1].endswith("terminated")
        assert {p.name for p in own_tmpdir.iterdir()} == before, share
        assert _debris(pkg) == [], share
        _complete(pkg)
    assert terminated >= 2
