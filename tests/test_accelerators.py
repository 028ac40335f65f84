"""Issue 7's GPU-side machinery, tested where it runs: IO binding, node placement, the TensorRT
engine cache key and build message, the fp16 variant and the TensorRT INT8 preset.

IO binding, placement and both new variants run on ONNX Runtime's CPU provider as well, so their
logic is tested here on every machine; the tests marked ``gpu`` repeat the parts that only a
GPU can show and skip cleanly without one (CI has none).
"""

from __future__ import annotations

import json
import logging

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from conftest import WORDS, cli, make_text_package

import edgeai
from edgeai import gpu, providers
from edgeai.errors import InputError
from edgeai.machine import is_this_machine, machine_id, machine_key
from edgeai.pipeline import choose_variant
from edgeai.quantize import quantize
from edgeai.session import Session


def _x(n: int = 4) -> np.ndarray:
    return np.random.default_rng(0).random((n, 3, 8, 8), dtype=np.float32)


def _needs(provider: str) -> None:
    reason = providers.unavailable_reason(provider)
    if reason is not None:
        pytest.skip(f"{providers.short_name(provider)} cannot start here: {reason}")


# -- IO binding --------------------------------------------------------------------------------
def test_io_binding_gives_the_plain_results(tiny_pkg):
    pipe = edgeai.load(tiny_pkg, provider="cpu")
    assert pipe.session.io_binding is False  # on for CUDA/TensorRT only
    m = pipe.package.manifest
    bound = Session(pipe.package.variant_path("fp32"), m["inputs"], m["outputs"], provider="cpu", io_binding=True)
    x = _x()
    want = pipe.run({"pixel_values": x})["logits"]
    np.testing.assert_array_equal(bound.run({"pixel_values": x})["logits"], want)
    # An OrtValue is bound as it is; device_outputs leaves the outputs as OrtValues.
    value = ort.OrtValue.ortvalue_from_numpy(x)
    np.testing.assert_array_equal(pipe.run({"pixel_values": value})["logits"], want)
    out = pipe.run({"pixel_values": x}, device_outputs=True)["logits"]
    assert isinstance(out, ort.OrtValue) and out.device_name().lower() == "cpu"
    np.testing.assert_array_equal(out.numpy(), want)
    # Bindings are per call: threads sharing the session get their own results.
    from concurrent.futures import ThreadPoolExecutor

    xs = [np.full((2, 3, 8, 8), i / 10, np.float32) for i in range(16)]
    with ThreadPoolExecutor(8) as pool:
        got = list(pool.map(lambda a: bound.run({"pixel_values": a})["logits"], xs))
    for a, g in zip(xs, got):
        np.testing.assert_allclose(g, pipe.run({"pixel_values": a})["logits"], rtol=1e-5)


def test_an_ortvalue_of_the_wrong_kind_gets_one_sentence(tiny_pkg):
    pipe = edgeai.load(tiny_pkg, provider="cpu")
    with pytest.raises(InputError, match="float32 .* got an OrtValue of tensor\\(double\\)"):
        pipe.run({"pixel_values": ort.OrtValue.ortvalue_from_numpy(_x().astype(np.float64))})
    with pytest.raises(InputError, match="got an OrtValue of shape \\(4, 3, 8, 4\\)"):
        pipe.run({"pixel_values": ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(_x()[..., :4]))})


# -- node placement ----------------------------------------------------------------------------
MIXED_LOG = """\
2026-11-23 10:00:00.1 [V:onnxruntime:, session_state.cc:1578 VerifyEachNodeIsAssignedToAnEp] Node placements
2026-11-23 10:00:00.1 [V:onnxruntime:, session_state.cc:1585 VerifyEachNodeIsAssignedToAnEp]  Node(s) placed on [CUDAExecutionProvider]. Number of nodes: 340
2026-11-23 10:00:00.1 [V:onnxruntime:, session_state.cc:1587 VerifyEachNodeIsAssignedToAnEp]   MatMul (/0/MatMul), Add (/0/Add)
2026-11-23 10:00:00.1 [V:onnxruntime:, session_state.cc:1585 VerifyEachNodeIsAssignedToAnEp]  Node(s) placed on [CPUExecutionProvider]. Number of nodes: 62
"""


def test_placement_is_read_from_onnx_runtimes_own_log(tiny_pkg):
    assert providers.parse_placement(MIXED_LOG) == {"CUDAExecutionProvider": 340, "CPUExecutionProvider": 62}
    line = providers.placement_line(providers.parse_placement(MIXED_LOG), providers.CUDA)
    assert line == "cuda 340 of 402 nodes (85%), cpu 62 (15%)"
    assert providers.placement_line({providers.CUDA: 12}, providers.CUDA) is None  # all where asked: nothing to say
    # The real log of a real session, captured from ONNX Runtime's stderr and parsed.
    model = tiny_pkg / "model.onnx"
    _, choice = providers.create_session(model, ort.SessionOptions(), "cpu", placement=True)
    assert set(choice.placement) == {providers.CPU}
    assert 0 < choice.placement[providers.CPU] <= len(onnx.load(str(model)).graph.node)
    assert choice.placement_line() is None


def test_the_log_capture_passes_other_stderr_through_and_survives_a_missing_stderr(tiny_pkg, capfd, monkeypatch):
    so = ort.SessionOptions()
    so.log_severity_level = 3
    with providers._verbose_log(so) as captured:
        assert so.log_severity_level == 0
        import os

        os.write(2, b"2026-11-23 10:00:00.1 [V:onnxruntime:, x.cc:1 F] verbose chatter\n")
        os.write(2, b"2026-11-23 10:00:00.2 [E:onnxruntime:, x.cc:2 F] libfoo.so: cannot open\n")
        os.write(2, b"a line another thread wrote\n")
    assert so.log_severity_level == 3 and "verbose chatter" in captured[0]
    assert providers.first_error(captured[0]) == "libfoo.so: cannot open"
    err = capfd.readouterr().err
    assert "a line another thread wrote" in err and "onnxruntime" not in err
    # A windowed program may have no sys.stderr, or no file descriptor 2 at all: the session is
    # still created; without fd 2 the placement stays unknown.
    monkeypatch.setattr("sys.stderr", None)
    _, choice = providers.create_session(tiny_pkg / "model.onnx", ort.SessionOptions(), "cpu", placement=True)
    assert choice.provider == providers.CPU and choice.placement[providers.CPU] > 0

    def no_fd(fd):
        raise OSError(9, "Bad file descriptor")

    with monkeypatch.context() as m:  # undone before capfd's own teardown needs os.dup
        m.setattr(providers.os, "dup", no_fd)
        _, choice = providers.create_session(tiny_pkg / "model.onnx", ort.SessionOptions(), "cpu", placement=True)
    assert choice.provider == providers.CPU and choice.placement == {}


def test_inspect_shows_placement_on_a_named_provider(tiny_pkg):
    r = cli("inspect", str(tiny_pkg), "--provider", "cpu", "--json")
    assert r.returncode == 0, r.stderr
    placement = json.loads(r.stdout)["placement"]
    assert placement["fp32"]["provider"] == providers.CPU and placement["fp32"]["nodes"][providers.CPU] > 0
    r = cli("inspect", str(tiny_pkg), "--provider", "cpu")
    assert r.returncode == 0 and "placement" in r.stdout and "all " in r.stdout
    if providers.unavailable_reason(providers.CUDA) is not None:
        r = cli("inspect", str(tiny_pkg), "--provider", "cuda")
        assert r.returncode == 1 and "Traceback" not in r.stderr and "cannot start" in r.stderr


# -- TensorRT engine cache ---------------------------------------------------------------------
def test_engine_cache_is_keyed_by_model_ort_tensorrt_and_gpu(monkeypatch, edgeai_home):
    monkeypatch.setattr(gpu, "gpu_name", lambda device_id=0: ["NVIDIA H100 80GB HBM3", "NVIDIA L4"][device_id])
    monkeypatch.setattr(gpu, "tensorrt_version", lambda: "10.13.3")
    a, b = "a" * 64, "b" * 64
    key = gpu.engine_key(a)
    assert key == f"aaaaaaaaaaaaaaaa-ort{ort.__version__}-trt10.13.3-nvidia-h100-80gb-hbm3"
    assert gpu.engine_key(b) != key and gpu.engine_key(a, device_id=1) != key
    monkeypatch.setattr(ort, "__version__", "9.9.9")
    assert gpu.engine_key(a) != key
    cache = gpu.engine_cache_dir(a)
    assert cache.parent == edgeai_home / "tensorrt"
    opts = providers.provider_options(providers.TENSORRT, 0, cache, providers.tensorrt_flags("fp16", {}))
    assert opts["trt_engine_cache_path"] == opts["trt_timing_cache_path"] == str(cache) and cache.is_dir()
    assert opts["trt_engine_cache_enable"] and opts["trt_fp16_enable"]
    assert not gpu.has_engine(cache)
    (cache / "TensorrtExecutionProvider_TRTKernel_graph_x_1_sm90.engine").write_bytes(b"x")
    assert gpu.has_engine(cache)
    # Flags follow the variant: fp16 graphs need TensorRT's fp16 flag, the TensorRT INT8 its int8 flag.
    assert providers.tensorrt_flags("fp32", {}) == {}
    assert providers.tensorrt_flags("int8", {"recipe": {"method": "static"}}) == {}
    assert providers.tensorrt_flags("int8", {"recipe": {"preset": "tensorrt"}})["trt_int8_enable"]


def test_gpu_figures_are_recorded_per_gpu(monkeypatch):
    monkeypatch.setattr(gpu, "gpu_name", lambda device_id=0: "NVIDIA L4")
    assert machine_key(providers.CPU) == machine_id()
    assert machine_key(providers.CUDA) == f"{machine_id()} + NVIDIA L4"
    assert is_this_machine(machine_key(providers.TENSORRT)) and is_this_machine(machine_id())
    assert not is_this_machine("x86_64 some other cpu 64cpu")


# -- fp16 and the TensorRT INT8 preset ---------------------------------------------------------
def test_fp16_variant_keeps_float32_inputs_and_outputs(tiny_pkg, tmp_path):
    quantize(tiny_pkg, precision="fp16", measure_latency=False)
    pipe = edgeai.load(tiny_pkg, variant="fp16", provider="cpu")
    info = pipe.package.variants["fp16"]
    assert info["made_from"] == "fp32" and info["recipe"]["keep_io_types"]
    model = onnx.load(str(pipe.package.variant_path("fp16")))
    assert model.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert model.graph.output[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert {i.data_type for i in model.graph.initializer} == {onnx.TensorProto.FLOAT16}
    onnx.checker.check_model(model)  # topologically sorted: the converter left its input casts last (review)
    x = _x(8)
    fp32 = edgeai.load(tiny_pkg, variant="fp32", provider="cpu").run({"pixel_values": x})["logits"]
    got = pipe.run({"pixel_values": x})["logits"]
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, fp32, rtol=1e-2, atol=1e-2)
    assert info["accuracy"]["top1_agreement"] >= 0.9 and info["accuracy_details"]["vs"] == "fp32"
    # The GPU default order prefers fp16 when nothing was timed there; the CPU never defaults to it.
    assert choose_variant(pipe.package, providers.CUDA)[0] == "fp16"
    assert choose_variant(pipe.package, providers.CPU)[0] != "fp16"
    # the file on its own, wrapped by `optimize FILE.onnx`: its base variant says it is float16, as given
    half = tmp_path / "half.onnx"
    half.write_bytes(pipe.package.variant_path("fp16").read_bytes())
    r = cli("optimize", str(half))
    assert r.returncode == 0, r.stderr
    assert "fp32 (" in r.stdout and "float16 weights as given" in r.stdout.split(";")[0], r.stdout
    wrapped = edgeai.load(tmp_path / "half", variant="fp32", provider="cpu")
    assert wrapped.package.variants["fp32"]["recipe"]["weights"] == "float16"
    np.testing.assert_allclose(wrapped.run({"pixel_values": x})["logits"], got, rtol=1e-3, atol=1e-3)
    r = cli("quantize", str(tmp_path / "half"))  # ONNX Runtime's quantizer failed on a temporary file (review)
    assert r.returncode == 1 and "computes in float16 (a float16 .onnx, as given)" in r.stderr, r.stderr


def test_fp16_of_a_text_model_and_the_cli(tmp_path):
    pkg = make_text_package(tmp_path / "text")
    r = cli("quantize", str(pkg), "--precision", "fp16")
    assert r.returncode == 0, r.stderr
    assert "fp16 (" in r.stdout
    pipe = edgeai.load(pkg, variant="fp16")
    ref = edgeai.load(pkg, variant="fp32")
    texts = [" ".join(WORDS[i : i + 4]) for i in range(0, 12, 2)]
    assert [p["top_k"][0]["label"] for p in pipe.predict(texts)] == [p["top_k"][0]["label"] for p in ref.predict(texts)]
    for args, msg in [(["--precision", "fp16", "--method", "static"], "int8 only"),
                      (["--from", "optimized"], "--from applies to --precision fp16"),
                      (["--preset", "tensorrt", "--method", "dynamic"], "only static INT8"),
                      (["--method", "dynamic", "--calibration", str(tmp_path)], "--calibration is for static INT8")]:
        r = cli("quantize", str(pkg), *args)
        assert r.returncode == 1 and msg in r.stderr and "Traceback" not in r.stderr, (args, r.stderr)


def test_tensorrt_preset_is_static_symmetric_qdq(tiny_pkg):
    quantize(tiny_pkg, preset="tensorrt", measure_latency=False)
    pkg = edgeai.load(tiny_pkg, provider="cpu").package
    info = pkg.variants["int8"]
    assert info["recipe"]["preset"] == "tensorrt" and info["recipe"]["symmetric"]
    model = onnx.load(str(pkg.variant_path("int8")))
    inits = {i.name: onnx.numpy_helper.to_array(i) for i in model.graph.initializer}
    qs = [n for n in model.graph.node if n.op_type == "QuantizeLinear"]
    dqs = [n for n in model.graph.node if n.op_type == "DequantizeLinear"]
    assert qs and dqs
    for n in qs + dqs:  # int8 with zero points of 0 (TensorRT refuses anything else)
        zp = inits[n.input[2]]
        assert zp.dtype == np.int8 and not zp.any(), n.name
    # Biases stay float: a TensorRT DequantizeLayer takes no int32.
    assert not [n.name for n in dqs if n.input[0] in inits and inits[n.input[0]].dtype == np.int32]
    gemm = next(n for n in model.graph.node if n.op_type == "Gemm")
    assert inits[gemm.input[2]].dtype == np.float32
    # Measured as TensorRT computes (Q/DQ simulated), and never chosen off TensorRT.
    assert "simulated" in info["recipe"]["accuracy_measured_on"]
    assert choose_variant(pkg, providers.CPU)[0] != "int8"
    assert choose_variant(pkg, providers.CPU)[1].endswith("; int8 is made for TensorRT and runs only there")
    assert choose_variant(pkg, providers.CUDA)[0] != "int8"
    from edgeai.pipeline import meets_budget

    assert (choose_variant(pkg, providers.TENSORRT)[0] == "int8") == meets_budget(pkg, "int8")


# -- on a GPU ----------------------------------------------------------------------------------
@pytest.mark.gpu
def test_the_gpu_is_named_for_the_engine_key():
    _needs(providers.CUDA)
    name = gpu.gpu_name(0)
    assert name and "unknown" not in gpu.engine_key("0" * 64).split("-trt")[1]
    if providers.unavailable_reason(providers.TENSORRT) is None:
        assert gpu.tensorrt_version() and "trtunknown" not in gpu.engine_key("0" * 64)


@pytest.mark.gpu
def test_cuda_io_binding_placement_and_fp16(tiny_pkg):
    _needs(providers.CUDA)
    quantize(tiny_pkg, precision="fp16", measure_latency=False)
    pipe = edgeai.load(tiny_pkg, provider="cuda", variant="fp32")
    assert pipe.session.io_binding and pipe.placement.get(providers.CUDA, 0) > 0
    x = _x()
    cpu = edgeai.load(tiny_pkg, provider="cpu", variant="fp32").run({"pixel_values": x})["logits"]
    on_gpu = ort.OrtValue.ortvalue_from_numpy(x, "cuda", 0)
    out = pipe.run({"pixel_values": on_gpu}, device_outputs=True)["logits"]
    assert out.device_name().lower() == "cuda"
    np.testing.assert_allclose(out.numpy(), cpu, rtol=1e-5, atol=1e-6)
    half = edgeai.load(tiny_pkg, provider="cuda", variant="fp16").run({"pixel_values": x})["logits"]
    np.testing.assert_allclose(half, cpu, rtol=1e-2, atol=1e-2)


@pytest.mark.gpu
def test_tensorrt_builds_once_and_says_so(tiny_pkg, caplog, monkeypatch, tmp_path):
    _needs(providers.TENSORRT)
    monkeypatch.setenv("EDGEAI_HOME", str(tmp_path / "home"))  # no engine from an earlier test
    x = _x()
    with caplog.at_level(logging.WARNING, logger="edgeai"):
        first = edgeai.load(tiny_pkg, provider="tensorrt", variant="fp32")
        first.run({"pixel_values": x})
    messages = " ".join(r.getMessage() for r in caplog.records)
    assert "Building a TensorRT engine" in messages and "Built the TensorRT engine in" in messages
    cache = first.session.choice.engine_cache
    assert cache and gpu.has_engine(__import__("pathlib").Path(cache))
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="edgeai"):
        again = edgeai.load(tiny_pkg, provider="tensorrt", variant="fp32")
        again.run({"pixel_values": x})
    assert "Building" not in " ".join(r.getMessage() for r in caplog.records)
    assert again.session.choice.engine_cache == cache
