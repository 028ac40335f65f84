"""A disk that fills up during an export, optimize or quantize: one sentence that says so and
writes nothing (review: ONNX Runtime said only "Protobuf serialization failed", torch's exporter
"torch.onnx.export failed (tracing at ...)"). The disk is a small tmpfs, so the tests need root
and a kernel that lets this container mount one; elsewhere they skip."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import onnx
import pytest
from conftest import cli
from onnx import TensorProto, helper, numpy_helper

from edgeai.errors import short_of_space, shown

TRACEBACK = "Traceback (most recent call last)"


def test_short_of_space_names_the_folder_a_user_asked_for(tmp_path):
    hidden = tmp_path / ".net.edgeai-tmp-1-abc"
    hidden.mkdir()
    assert shown(hidden) == str(tmp_path)
    assert shown(tmp_path / "net") == str(tmp_path / "net")
    said = short_of_space(10**18, tmp_path / "missing", hidden)  # a missing folder is passed over
    assert said.startswith(f"the disk holding {tmp_path} is nearly full (") and "the graph is 1000000000000.0 MB" in said
    assert short_of_space(1, tmp_path) is None


@pytest.fixture
def small_disk(request):
    """A 1.6 MB tmpfs (or the size a test gives): room for a 1.4 MB fp32 graph, not for a second beside it."""
    where = Path(tempfile.mkdtemp(prefix="edgeai-full-"))
    size = getattr(request, "param", "1600k")
    if subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)], capture_output=True).returncode:
        where.rmdir()
        pytest.skip("cannot mount a small tmpfs here (needs root and a kernel that allows it)")
    try:
        yield where
    finally:
        subprocess.run(["umount", str(where)], capture_output=True)
        where.rmdir()


def _linear(path: Path) -> None:
    """x [batch, 512] -> MatMul -> Add -> y [batch, 700]: 1.4 MB of float weights."""
    rng = np.random.default_rng(0)
    weights = [numpy_helper.from_array(rng.standard_normal((512, 700)).astype(np.float32), "W"),
               numpy_helper.from_array(rng.standard_normal(700).astype(np.float32), "B")]
    nodes = [helper.make_node("MatMul", ["x", "W"], ["h"]), helper.make_node("Add", ["h", "B"], ["y"])]
    graph = helper.make_graph(nodes, "linear", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 512])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 700])], weights)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))


@pytest.mark.parametrize("command", ["optimize", "quantize"])
def test_a_step_that_fills_the_disk_says_so_and_writes_nothing(small_disk, tmp_path, command):
    _linear(tmp_path / "linear.onnx")
    r = cli(command, str(tmp_path / "linear.onnx"), "-o", str(small_disk / "pkg"))
    assert r.returncode == 1 and TRACEBACK not in r.stderr, r.stderr
    error = r.stderr.strip().splitlines()[-1]
    assert error.startswith("error: The ") and f"the disk holding {small_disk / 'pkg'} is nearly full (" in error, error
    assert "(nothing was written)." in error
    assert list(small_disk.iterdir()) == []


@pytest.mark.parametrize("small_disk", ["1000k"], indirect=True)  # less than the 1.4 MB graph
def test_a_full_scratch_disk_is_named_as_the_temporary_folder(small_disk, tmp_path):
    """The quantizer's scratch files go under $TMPDIR: a full one is named, not its vanished subfolder."""
    _linear(tmp_path / "linear.onnx")
    r = cli("quantize", str(tmp_path / "linear.onnx"), "-o", str(tmp_path / "pkg"), env={"TMPDIR": str(small_disk)})
    assert r.returncode == 1 and TRACEBACK not in r.stderr, r.stderr
    assert f"failed on linear's fp32 graph: the disk holding {small_disk} is nearly full (" in r.stderr, r.stderr
    assert not (tmp_path / "pkg").exists()
    assert [p.name for p in small_disk.iterdir() if p.name != ".ses"] == []  # .ses: onnxruntime's own, at import


def test_a_torch_export_that_fills_the_disk_says_so_and_writes_nothing(small_disk, tmp_path):
    (tmp_path / "net.py").write_text(
        "import torch\n\ndef make_model():\n"
        "    return torch.nn.Sequential(torch.nn.Linear(512, 1200), torch.nn.ReLU(), torch.nn.Linear(1200, 10))\n")
    r = cli("export", f"{tmp_path / 'net.py'}:make_model", "--input", "x:1,512:float32", "-o", str(small_disk / "net"))
    assert r.returncode == 1 and TRACEBACK not in r.stderr, r.stderr
    assert r.stderr.strip().splitlines()[-1] == f"error: torch.onnx.export could not write the graph into {small_disk}: No space left on device.", r.stderr
    assert list(small_disk.iterdir()) == []


def test_an_optimum_export_that_fills_the_disk_says_so_and_writes_nothing(small_disk, tmp_path):
    """A text-generation checkpoint goes through Optimum's exporter: its OSError is the same sentence."""
    import torch
    from test_generate import _tokenizer
    from transformers import GPT2Config, GPT2LMHeadModel

    tok = _tokenizer()
    torch.manual_seed(0)
    GPT2LMHeadModel(GPT2Config(n_embd=256, n_layer=2, n_head=2, n_positions=64, vocab_size=len(tok),
                               eos_token_id=0, bos_token_id=0, pad_token_id=0)).save_pretrained(tmp_path / "gpt2")  # 7 MB
    tok.save_pretrained(tmp_path / "gpt2")
    r = cli("export", "--model", str(tmp_path / "gpt2"), "--task", "text-generation", "-o", str(small_disk / "gen"))
    assert r.returncode == 1 and TRACEBACK not in r.stderr, r.stderr
    assert r.stderr.strip().splitlines()[-1] == (
        f"error: Optimum's ONNX exporter could not write the graph into {small_disk}: No space left on device."), r.stderr
    assert list(small_disk.iterdir()) == []


def test_a_tokenizer_that_cannot_be_saved_on_a_full_disk_is_one_sentence(small_disk, tmp_path):
    """The tokenizers' save reports a full disk as a plain Exception "... (os error 28)": it was a traceback (review)."""
    import torch
    from test_generate import _tokenizer
    from transformers import GPT2Config, GPT2LMHeadModel

    tok = _tokenizer()
    torch.manual_seed(0)
    GPT2LMHeadModel(GPT2Config(n_embd=64, n_layer=1, n_head=2, n_positions=64, vocab_size=len(tok),
                               eos_token_id=0, bos_token_id=0, pad_token_id=0)).save_pretrained(tmp_path / "gpt2")
    tok.save_pretrained(tmp_path / "gpt2")
    with open(small_disk / "filler", "wb") as f, pytest.raises(OSError):
        f.write(b"\0" * 2_000_000)  # the tokenizer.json (26 kB) no longer fits
    r = cli("export", "--model", str(tmp_path / "gpt2"), "--task", "text-generation", "-o", str(small_disk / "gen"))
    assert r.returncode == 1 and TRACEBACK not in r.stderr, r.stderr
    assert r.stderr.strip().splitlines()[-1] == f"error: {small_disk} cannot be written: No space left on device.", r.stderr
    assert [p.name for p in small_disk.iterdir()] == ["filler"]


def test_a_record_on_a_full_disk_names_the_package(small_disk, tmp_path):
    """The manifest's write on a full disk fails in write() or flush(), which name no file: the sentence
    named nothing, "A file cannot be written or read: No space left on device." (review: bench --record)."""
    from conftest import tiny_classifier

    tiny_classifier(tmp_path / "tiny.onnx")
    assert cli("optimize", str(tmp_path / "tiny.onnx"), "-o", str(small_disk / "pkg")).returncode == 0
    manifest = (small_disk / "pkg" / "manifest.json").read_bytes()
    with open(small_disk / "filler", "wb") as f, pytest.raises(OSError):
        f.write(b"\0" * 2_000_000)
    r = cli("bench", str(small_disk / "pkg"), "--record", "--variant", "fp32", "--rounds", "1", "--runs", "5")
    assert r.returncode == 1 and TRACEBACK not in r.stderr, r.stderr
    assert r.stderr.strip().splitlines()[-1] == f"error: {small_disk / 'pkg'} cannot be written: No space left on device.", r.stderr
    assert (small_disk / "pkg" / "manifest.json").read_bytes() == manifest
    assert sorted(p.name for p in (small_disk / "pkg").iterdir() if p.name.startswith(".manifest")) == []


def test_a_failed_fp16_step_on_a_plain_onnx_file_says_nothing_was_written(tmp_path, monkeypatch):
    """quantize() hands the package it wrapped to to_fp16(), whose own opened() reset the mark:
    the sentence said "the package is unchanged" of a package that the failure removed (review)."""
    from edgeai.errors import ExportError
    from edgeai.quantize import quantize
    from edgeai.quantize.steps import fp16

    def fails(*args, **kwargs):
        raise ValueError("this graph's op cannot be converted")

    monkeypatch.setattr(fp16.Float16, "run", fails)
    _linear(tmp_path / "linear.onnx")
    with pytest.raises(ExportError, match=r"cannot be converted \(nothing was written\)\.$"):
        quantize(str(tmp_path / "linear.onnx"), precision="fp16", out=str(tmp_path / "pkg"), measure_latency=False)
    assert not (tmp_path / "pkg").exists()


@pytest.mark.parametrize("small_disk", ["2400k"], indirect=True)  # room for the fp16 variant, less than the fp32 graph
def test_a_step_that_fails_for_another_reason_does_not_blame_a_disk_with_room(small_disk, tmp_path, monkeypatch):
    """The disk has less free than the source graph, yet the fp16 variant fits: a conversion's own
    failure there said "the disk holding ... is nearly full" (review)."""
    from edgeai.errors import ExportError
    from edgeai.quantize import quantize
    from edgeai.quantize.steps import fp16

    _linear(tmp_path / "linear.onnx")
    quantize(str(tmp_path / "linear.onnx"), precision="fp16", out=str(small_disk / "pkg"), measure_latency=False)
    shutil.rmtree(small_disk / "pkg")  # it fits

    def fails(*args, **kwargs):
        raise ValueError("this graph's op cannot be converted")

    monkeypatch.setattr(fp16.Float16, "run", fails)
    with pytest.raises(ExportError) as caught:
        quantize(str(tmp_path / "linear.onnx"), precision="fp16", out=str(small_disk / "pkg"), measure_latency=False)
    assert "graph: ValueError: this graph's op cannot be converted (" in str(caught.value), caught.value
