"""Stages write atomically: a run killed half-way leaves the previous package intact."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import edgeai
from conftest import CAT
from edgeai.package import Package

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("own_tmpdir")]


def _spawn(*args: str) -> subprocess.Popen:
    exe = Path(sys.executable).with_name("edgeai")
    return subprocess.Popen([str(exe), *args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            stdin=subprocess.DEVNULL, start_new_session=True)


def _snapshot(pkg: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(pkg.iterdir()) if p.is_file() and "edgeai-tmp" not in p.name}


@pytest.mark.parametrize("delay", [3.0, 10.0])  # in the PyTorch export; in the held-out checks and timing
def test_export_killed_half_way_keeps_the_old_package(cnn_pkg, tmp_path, delay):
    # the same model's package, which a finished export would replace (another model's is refused
    # at once: with the tiny package here, this test had been skipping on every machine)
    target = tmp_path / "pkg"
    shutil.copytree(cnn_pkg, target)
    before = _snapshot(target)
    proc = _spawn("export", "cnn", "-o", str(target), "--precision", "fp32")
    try:
        proc.wait(timeout=delay)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    else:
        assert proc.returncode == 0, "the export failed before the kill point"
        pytest.skip("export finished before the kill point on this machine")
    assert _snapshot(target) == before
    edgeai.load(target).predict(str(CAT))
    debris = [p for p in tmp_path.iterdir() if "edgeai-tmp" in p.name]
    from edgeai.package import clean_debris

    clean_debris(target)  # what the next run does first
    assert not [p for p in tmp_path.iterdir() if "edgeai-tmp" in p.name], debris


def test_quantize_killed_half_way_keeps_the_package_loadable(cnn_pkg, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(cnn_pkg, copy)
    before = (copy / "manifest.json").read_bytes()
    proc = _spawn("quantize", str(copy))
    time.sleep(8)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert (copy / "manifest.json").read_bytes() == before
    pkg = Package.open(copy)
    for name in pkg.variants:
        pkg.variant_path(name)  # every hash still matches
    assert edgeai.load(copy, variant="int8").predict(str(CAT))["top_k"]


def test_an_empty_mount_point_is_refused_before_any_work():
    """A container's volume is a mount point: staging_dir cannot rename it aside, and the export
    ended in an EBUSY traceback after all its work (review). Refused first, naming a folder inside."""
    from edgeai.atomic import check_destination
    from edgeai.errors import PackageError

    shm = Path("/dev/shm")
    if not (os.path.ismount(shm) and shm.is_dir() and os.access(shm, os.W_OK) and not any(shm.iterdir())):
        pytest.skip("no empty, writable mount point (/dev/shm) here")
    with pytest.raises(PackageError, match=r"/dev/shm is a mount point.*give a folder inside it \(-o /dev/shm/NAME\)"):
        check_destination(shm, "tiny")


def test_a_bind_mounted_package_folder_is_refused_in_one_sentence(tmp_path, monkeypatch):
    """A bind mount of a folder of the same file system (``docker run -v`` on one disk, ``mount
    --bind``) has its parent's device, so os.path.ismount does not see it: the export ran to its end
    and died in an EBUSY traceback when staging_dir renamed the folder aside (review). Seen in
    /proc/self/mountinfo it is refused first; missed there too, the rename's EBUSY is one sentence."""
    import errno

    from conftest import make_tiny_package

    from edgeai import atomic
    from edgeai.errors import PackageError

    pkg = make_tiny_package(tmp_path / "my models" / "tiny")
    mountinfo = tmp_path / "mountinfo"
    where = str(pkg.resolve()).replace(" ", "\\040")  # as the kernel writes a space
    mountinfo.write_text(f"22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw\n"
                         f"95 22 8:1 /srv/tiny {where} rw,relatime shared:1 - ext4 /dev/sda1 rw\n")
    monkeypatch.setattr(atomic, "_MOUNTINFO", str(mountinfo), raising=False)
    with pytest.raises(PackageError, match=r"tiny is a mount point.*give a folder inside it"):
        atomic.check_destination(pkg, "tiny")

    monkeypatch.setattr(atomic, "_MOUNTINFO", str(tmp_path / "none"), raising=False)  # not listed: only the rename can tell
    real_replace = os.replace

    def busy(src, dst):
        if Path(src) == pkg.absolute():
            raise OSError(errno.EBUSY, "Device or resource busy", str(src), str(dst))
        real_replace(src, dst)

    monkeypatch.setattr(atomic.os, "replace", busy)
    before = sorted(p.name for p in pkg.iterdir())
    with pytest.raises(PackageError, match=r"tiny is a mount point"):
        with atomic.staging_dir(pkg, "tiny") as tmp:
            (tmp / "manifest.json").write_text("{}")
    assert sorted(p.name for p in pkg.iterdir()) == before
    assert not [p for p in pkg.parent.iterdir() if "edgeai-tmp" in p.name]


def test_a_package_reached_through_a_symlink_is_rebuilt_where_the_link_points(tmp_path):
    # models/net -> ../store/net: renamed in place, the link was replaced by a new folder, and
    # store/net kept the old model with the user's notes moved out of it (review)
    import torch

    from edgeai.export import export_module

    store, models = tmp_path / "store", tmp_path / "models"
    models.mkdir()
    torch.manual_seed(0)
    first = export_module(torch.nn.Linear(4, 2), {"x": torch.ones(1, 4)}, store / "net", precision="fp32")
    (models / "net").symlink_to("../store/net")
    (store / "net" / "NOTES.md").write_text("mine\n")
    torch.manual_seed(1)
    export_module(torch.nn.Linear(4, 2), {"x": torch.ones(1, 4)}, models / "net", precision="fp32")
    assert (models / "net").is_symlink() and sorted(p.name for p in models.iterdir()) == ["net"]
    assert (store / "net" / "NOTES.md").read_text() == "mine\n"
    assert Package.open(store / "net").variants["fp32"]["sha256"] != first.variants["fp32"]["sha256"]
    assert not [p for p in store.iterdir() if p.name != "net"]  # no debris beside the target either
