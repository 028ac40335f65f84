"""edgeai on Ray: a local Ray instance (2 CPUs) gives the same lines as the single-machine bulk
run, error lines included, with the package shipped by path or through the object store, and a
Ray worker killed mid-run loses and duplicates nothing."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path

import numpy as np
import pytest

import edgeai
from conftest import cli, make_text_package, make_tiny_package
from edgeai.bulk import list_inputs, run_bulk
from test_bulk import photo_folder, read_lines

ray = pytest.importorskip("ray")
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def pkgs(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("ray")
    return {"image": make_tiny_package(root / "img"), "text": make_text_package(root / "txt")}


def same_results(a: Path, b: Path) -> None:
    la, lb = read_lines(a), read_lines(b)
    assert [x["input"] for x in la] == [x["input"] for x in lb]  # same inputs, same order, once each
    for x, y in zip(la, lb):
        assert ("error" in x) == ("error" in y) and x.get("error") == y.get("error")
        if "top_k" in x:
            assert [t["index"] for t in x["top_k"]] == [t["index"] for t in y["top_k"]]
            np.testing.assert_allclose([t["score"] for t in x["top_k"]], [t["score"] for t in y["top_k"]], rtol=1e-5)
            assert (x["variant"], x["provider"]) == (y["variant"], y["provider"])


@pytest.mark.parametrize("ship", ["path", "object_store"])
def test_ray_gives_the_single_machine_lines(local_ray, pkgs, tmp_path, ship):
    from edgeai.integrations.ray import run_ray

    photo_folder(tmp_path / "photos", 30)
    items = list_inputs([str(tmp_path / "photos")], text=False) + [str(tmp_path / "missing.jpg")]
    single, on_ray = tmp_path / "single.jsonl", tmp_path / "ray.jsonl"
    run_bulk(edgeai.load(pkgs["image"], provider="cpu"), items, single, batch_size=8)
    stats = run_ray(pkgs["image"], items, on_ray, batch_size=8, actors=2, ship=ship)
    assert stats["done"] == len(items) and stats["errors"] == 2  # broken.jpg and missing.jpg
    same_results(single, on_ray)


def test_ray_text_lines_and_resume(local_ray, pkgs, tmp_path):
    from edgeai.integrations.ray import run_ray

    texts = ["good movie", "caf\udce9 bad", "awful food " * 50, "love it", "good movie"]
    single, on_ray = tmp_path / "single.jsonl", tmp_path / "ray.jsonl"
    run_bulk(edgeai.load(pkgs["text"], provider="cpu"), texts, single, batch_size=2)
    on_ray.write_text(single.read_text().splitlines()[0] + "\n")  # one already done
    stats = run_ray(pkgs["text"], texts, on_ray, batch_size=2, actors=1)
    assert stats["skipped"] == 1 and stats["done"] == 4 and stats["errors"] == 1
    same_results(single, on_ray)


def _ray_workers() -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmd = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if b"MapWorker" in cmd:
                pids.append(int(entry.name))
    return pids


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="finds Ray's worker processes through /proc")
def test_a_worker_killed_mid_run_is_retried_without_loss_or_duplicates(local_ray, pkgs, tmp_path, capsys):
    from edgeai.integrations.ray import run_ray

    photo_folder(tmp_path / "photos", 240, scale=6)
    items = list_inputs([str(tmp_path / "photos")], text=False)
    single, on_ray = tmp_path / "single.jsonl", tmp_path / "ray.jsonl"
    run_bulk(edgeai.load(pkgs["image"], provider="cpu"), items, single, batch_size=4)
    result: dict = {}
    job = threading.Thread(target=lambda: result.update(run_ray(pkgs["image"], items, on_ray, batch_size=4, actors=2)))
    job.start()
    killed = None
    deadline = time.time() + 120
    while job.is_alive() and time.time() < deadline:
        lines = on_ray.read_text().count("\n") if on_ray.exists() else 0
        workers = _ray_workers()
        if lines >= 8 and workers:
            killed = workers[0]
            os.kill(killed, signal.SIGKILL)
            break
        time.sleep(0.05)
    job.join(timeout=300)
    assert killed is not None, "the run ended before a worker could be killed"
    assert result["done"] == len(items)
    same_results(single, on_ray)
    with capsys.disabled():
        print(f"\n[ray] killed worker {killed} mid-run; {len(items)} inputs, each written once, equal to the single-machine run")


def test_cli_ray_local(pkgs, tmp_path):
    photo_folder(tmp_path / "photos", 6)
    out = tmp_path / "o.jsonl"
    r = cli("run", "--model", str(pkgs["image"]), str(tmp_path / "photos"), "--out", str(out), "--ray", "local")
    assert r.returncode == 1 and "broken.jpg" in r.stderr and "Traceback" not in r.stderr
    lines = read_lines(out)
    assert len(lines) == 7 and sum("error" in x for x in lines) == 1
    r = cli("run", "--model", str(pkgs["image"]), str(tmp_path / "photos"), "--ray", "local")
    assert r.returncode == 1 and "add --out" in r.stderr
    assert json.loads(out.read_text().splitlines()[0])["provider"] == "CPUExecutionProvider"


def test_an_address_nothing_answers_and_a_damaged_variant_are_one_sentence_before_ray_starts(pkgs, tmp_path):
    # ray.init retried HOST:PORT forever (still waiting at 500 s); a damaged file was an
    # ActorDiedError under pages of tracebacks, retried in every actor
    import shutil
    import socket

    from edgeai.errors import InputError, PackageError
    from edgeai.integrations.ray import run_ray
    from edgeai.package import Package

    ray.shutdown()  # a Ray this process already joined is used as it is: no address is tried then
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    t0 = time.monotonic()
    with pytest.raises(InputError, match=rf"^Could not reach Ray at '127.0.0.1:{port}': nothing answered"):
        run_ray(pkgs["text"], ["a good day"], tmp_path / "a.jsonl", address=f"127.0.0.1:{port}")
    assert time.monotonic() - t0 < 30 and not (tmp_path / "a.jsonl").exists()
    damaged = shutil.copytree(pkgs["text"], tmp_path / "damaged")
    f = damaged / Package.open(damaged).variants["fp32"]["file"]
    f.write_bytes(f.read_bytes()[:-1] + bytes([f.read_bytes()[-1] ^ 1]))
    with pytest.raises(PackageError, match="does not match the sha256"):
        run_ray(damaged, ["a good day"], tmp_path / "b.jsonl", address="local", variant="fp32")
    assert not ray.is_initialized() and not (tmp_path / "b.jsonl").exists()
