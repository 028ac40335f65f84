"""Two writers on one package: both variants land (no lost update), and a writer that waits too
long for another gets one sentence."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from conftest import cli, make_tiny_package

from edgeai.package import Package, package_lock


def _spawn(*args: str, env: dict | None = None) -> subprocess.Popen:
    import os

    exe = Path(sys.executable).with_name("edgeai")
    return subprocess.Popen([str(exe), *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            stdin=subprocess.DEVNULL, env={**os.environ, **(env or {})})


def test_two_writers_at_once_both_land(tmp_path):
    pkg = make_tiny_package(tmp_path / "tiny")
    # Both read the manifest, work for a while, then write it: without the lock one variant was lost.
    procs = [_spawn("optimize", str(pkg)), _spawn("quantize", str(pkg), "--precision", "fp16")]
    for p in procs:
        _, err = p.communicate(timeout=600)
        assert p.returncode == 0, err[-2000:]
    p = Package.open(pkg)
    assert {"fp32", "optimized", "fp16"} <= set(p.variants)
    for name in p.variants:
        p.variant_path(name)  # every named file is there and matches its hash
    named = {v["file"] for v in p.variants.values()}
    assert not [f.name for f in pkg.glob("model.*.onnx") if f.name not in named]  # no orphaned variant file


def test_a_writer_that_waits_too_long_says_so(tmp_path):
    pkg = make_tiny_package(tmp_path / "tiny")
    before = json.loads((pkg / "manifest.json").read_text())
    with package_lock(pkg):
        r = cli("optimize", str(pkg), env={"EDGEAI_LOCK_TIMEOUT": "1"})
    assert r.returncode == 1
    assert "Another edgeai process has been writing the package" in r.stderr and "Traceback" not in r.stderr
    assert json.loads((pkg / "manifest.json").read_text()) == before
    assert sorted(p.name for p in pkg.iterdir()) == sorted(["labels.txt", "manifest.json", "model.onnx"])


def test_the_quantizer_leaves_no_scratch_graph_in_the_package(tmp_path, monkeypatch):
    """ONNX Runtime's dynamic quantizer writes a shape-inferred copy beside the graph it is given,
    as <stem>-inferred.onnx: inside the package, one name for every process, and left there for good
    when the disk filled up (or the run was killed) half-way through writing it."""
    import errno

    import onnx.shape_inference
    import pytest

    import edgeai.quantize
    from edgeai.errors import EdgeAIError

    pkg = make_tiny_package(tmp_path / "tiny")
    before = sorted(p.name for p in pkg.iterdir())
    written: list[Path] = []

    def disk_full(src, out, *args, **kwargs):  # the inferred graph half written, then the disk is full
        written.append(Path(out))
        Path(out).write_bytes(Path(src).read_bytes()[:10])
        raise OSError(errno.ENOSPC, "No space left on device", str(out))

    monkeypatch.setattr(onnx.shape_inference, "infer_shapes_path", disk_full)
    with pytest.raises(EdgeAIError):
        edgeai.quantize.quantize(pkg, method="dynamic")
    assert written and written[0].name != "model-inferred.onnx"  # a name of this process's own
    assert sorted(p.name for p in pkg.iterdir()) == before
    monkeypatch.undo()
    edgeai.quantize.quantize(pkg, method="dynamic")  # and with room, it lands
    assert "int8" in Package.open(pkg).variants and not list(pkg.glob("*inferred*"))
