"""Files and folders this user may not read, as another user meets them (review): one sentence
each and a non-zero exit, an error line in a bulk run, never a PermissionError traceback or
inputs passed over in silence. Root reads everything, so the commands run as ``nobody``."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from conftest import CAT, make_text_package, make_tiny_package

NOBODY = 65534
SETPRIV = shutil.which("setpriv")
pytestmark = pytest.mark.skipif(not (hasattr(os, "geteuid") and os.geteuid() == 0 and SETPRIV),
                                reason="needs root and setpriv, to run as a user whom permissions stop")
TRACEBACK = "Traceback (most recent call last)"


@pytest.fixture
def place():
    """A folder nobody may use, with two packages, readable and unreadable folders of inputs."""
    root = Path(tempfile.mkdtemp(prefix="edgeai-perm-"))
    try:
        make_tiny_package(root / "img")
        make_text_package(root / "txt")
        for folder in ("udir", "top/ok", "top/priv"):
            (root / folder).mkdir(parents=True)
            shutil.copy(CAT, root / folder / "cat.jpg")
            (root / folder / "reviews.txt").write_text("good movie\nbad movie\n")
        shutil.copytree(root / "txt", root / "locked")
        (root / "home").mkdir()
        for dirpath, _, files in os.walk(root):
            os.chown(dirpath, NOBODY, NOBODY)
            for f in files:
                os.chown(os.path.join(dirpath, f), NOBODY, NOBODY)
        root.chmod(0o755)
        for folder in ("udir", "top/priv", "locked"):
            (root / folder).chmod(0)
        yield root
    finally:
        for dirpath, dirs, _ in os.walk(root):
            for d in dirs:
                os.chmod(os.path.join(dirpath, d), 0o755)
        shutil.rmtree(root, ignore_errors=True)


def _as_nobody(place: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "EDGEAI_HOME": str(place / "home"), "HOME": str(place)}
    return subprocess.run([SETPRIV, f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", *args], capture_output=True,
                          text=True, timeout=300, cwd=place, env=env, stdin=subprocess.DEVNULL)


def _edgeai(place: Path, *args: str) -> subprocess.CompletedProcess:
    return _as_nobody(place, str(Path(sys.executable).with_name("edgeai")), *args)


def test_unreadable_inputs_and_packages_are_one_sentence_each(place):
    if _as_nobody(place, sys.executable, "-c", "import edgeai").returncode != 0:
        pytest.skip("this environment's Python cannot be read by another user")
    said = {}
    for args in (("run", "--model", "img", "udir/cat.jpg"), ("run", "--model", "txt", "udir/reviews.txt"),
                 ("run", "--model", "txt", "udir"), ("run", "--model", "locked", "good"), ("inspect", "locked")):
        r = _edgeai(place, *args)
        assert r.returncode == 1 and TRACEBACK not in r.stderr, (args, r.stderr)
        said[args[-1]] = r.stderr.strip().splitlines()[-1]
    # what it is, not "no file named" or "no .txt files in it"
    assert said["udir/cat.jpg"] == "error: udir/cat.jpg cannot be read: permission denied on a folder it is in."
    assert said["udir/reviews.txt"] == "error: udir/reviews.txt cannot be read: permission denied on a folder it is in."
    assert said["udir"] == "error: udir cannot be read: permission denied."
    assert said["good"] == said["locked"] == "error: The package locked cannot be read: permission denied."
    r = _as_nobody(place, sys.executable, "-c", "import edgeai\ntry:\n    edgeai.load('locked')\n"
                                               "except edgeai.EdgeAIError as e:\n    print(type(e).__name__, e)")
    assert r.stdout.strip() == "PackageError The package locked cannot be read: permission denied.", r.stderr


def test_a_bulk_run_reports_the_folders_it_cannot_list(place):
    if _as_nobody(place, sys.executable, "-c", "import edgeai").returncode != 0:
        pytest.skip("this environment's Python cannot be read by another user")
    r = _edgeai(place, "run", "--model", "img", "top", "udir", "--out", "r.jsonl")
    assert r.returncode == 1 and TRACEBACK not in r.stderr, r.stderr
    lines = [json.loads(x) for x in (place / "r.jsonl").read_text().splitlines()]
    assert [x["input"] for x in lines] == ["top/ok/cat.jpg", "top/priv", "udir"]
    assert "top_k" in lines[0] and lines[1]["error"] == "top/priv cannot be read: permission denied." and "error" in lines[2]
    r = _edgeai(place, "run", "--model", "txt", "top", "--json")  # a text model's folder: its lines, and the folder's error
    assert r.returncode == 1 and TRACEBACK not in r.stderr, r.stderr
    results = json.loads(r.stdout)["results"]
    assert [x["input"] for x in results] == ["top/ok/reviews.txt:1", "top/ok/reviews.txt:2", "top/priv"], results
    assert results[2]["error"] == "top/priv cannot be read: permission denied."
