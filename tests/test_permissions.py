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

import numpy as np
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
        for name in ("nomanifest", "nomodel"):
            shutil.copytree(root / "img", root / name)
        (root / "top" / "ronly").mkdir()  # listed but not entered
        shutil.copy(CAT, root / "top" / "ronly" / "cat.jpg")
        shutil.copy(root / "img" / "model.onnx", root / "plain.onnx")
        from quantize.wrap import wrap_onnx

        wrap_onnx(root / "plain.onnx")  # a tensor model, for array files
        np.save(root / "udir" / "a.npy", np.zeros((1, 3, 8, 8), np.float32))
        np.save(root / "ok.npy", np.zeros((1, 3, 8, 8), np.float32))
        (root / "home").mkdir()
        for dirpath, _, files in os.walk(root):
            os.chown(dirpath, NOBODY, NOBODY)
            for f in files:
                os.chown(os.path.join(dirpath, f), NOBODY, NOBODY)
        root.chmod(0o755)
        for folder in ("udir", "top/priv", "locked"):
            (root / folder).chmod(0)
        (root / "top" / "ronly").chmod(0o444)
        (root / "nomanifest" / "manifest.json").chmod(0)
        (root / "nomodel" / "model.onnx").chmod(0)
        shutil.copytree(root / "img", root / "xonly")  # root's, entered but not listed: it loads, as it did
        (root / "xonly").chmod(0o711)
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
    script = """import edgeai
def said(call):
    try:
        call()
        print("ran")
    except edgeai.EdgeAIError as e:
        print(type(e).__name__, e)
said(lambda: edgeai.load("locked"))
said(lambda: edgeai.load("nomanifest"))
said(lambda: edgeai.load("nomodel", provider="cpu"))
said(lambda: edgeai.load("xonly", provider="cpu").predict("top/ok/cat.jpg"))
said(lambda: edgeai.load("plain", provider="cpu").predict("udir/a.npy"))
print([sorted(r) for r in edgeai.load("plain", provider="cpu").predict_each(["udir/a.npy", "ok.npy"])])
"""
    r = _as_nobody(place, sys.executable, "-c", script)
    assert r.stdout.strip().splitlines() == [  # PermissionError tracebacks from load() and predict() (review)
        "PackageError The package locked cannot be read: permission denied.",
        "PackageError The manifest nomanifest/manifest.json cannot be read: permission denied.",
        f"PackageError The model file {place / 'nomodel' / 'model.onnx'} cannot be read: permission denied.",
        "ran",
        "InputError udir/a.npy cannot be read: permission denied on a folder it is in.",
        "[['error', 'input'], ['input', 'outputs']]"], r.stdout + r.stderr


def test_a_bulk_run_reports_the_folders_it_cannot_list(place):
    if _as_nobody(place, sys.executable, "-c", "import edgeai").returncode != 0:
        pytest.skip("this environment's Python cannot be read by another user")
    r = _edgeai(place, "run", "--model", "img", "top", "udir", "--out", "r.jsonl")
    assert r.returncode == 1 and TRACEBACK not in r.stderr, r.stderr
    lines = [json.loads(x) for x in (place / "r.jsonl").read_text().splitlines()]
    assert [x["input"] for x in lines] == ["top/ok/cat.jpg", "top/priv", "top/ronly", "udir"]
    assert "top_k" in lines[0] and lines[1]["error"] == "top/priv cannot be read: permission denied." and "error" in lines[3]
    assert lines[2]["error"] == "top/ronly cannot be read: permission denied."  # listed, not entered: its files raised
    r = _edgeai(place, "run", "--model", "txt", "top", "--json")  # a text model's folder: its lines, and the folder's error
    assert r.returncode == 1 and TRACEBACK not in r.stderr, r.stderr
    results = json.loads(r.stdout)["results"]
    assert [x["input"] for x in results] == ["top/ok/reviews.txt:1", "top/ok/reviews.txt:2", "top/priv", "top/ronly"], results
    assert results[2]["error"] == "top/priv cannot be read: permission denied."
