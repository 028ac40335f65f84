"""quantize/smooth.py on a small graph built here: the float result is unchanged, outlier
channels are evened out, and a weight two MatMuls share is scaled once for each of them; and
quantize/sensitivity.py's layer ranking on a sequence-first graph. (tests/test_bert.py checks
the same on all-MiniLM-L6-v2, with the INT8 gain.)"""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from edgeai.quantize.smooth import activation_maxima, groups, smoothed


def _graph() -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    w1 = rng.normal(size=(4, 4)).astype(np.float32)
    w2 = rng.normal(size=(4, 3)).astype(np.float32)
    nodes = [
        helper.make_node("MatMul", ["x", "w1"], ["y1"], name="first"),
        helper.make_node("MatMul", ["x", "w2"], ["y2"], name="second"),  # shares x with "first"
        helper.make_node("Relu", ["y1"], ["z"], name="relu"),
        helper.make_node("MatMul", ["z", "w1"], ["y3"], name="third"),  # shares w1 with "first", reads z
    ]
    graph = helper.make_graph(
        nodes, "smooth", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 4])],
        [helper.make_tensor_value_info("y2", TensorProto.FLOAT, ["n", 3]), helper.make_tensor_value_info("y3", TensorProto.FLOAT, ["n", 4])],
        [numpy_helper.from_array(w1, "w1"), numpy_helper.from_array(w2, "w2")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def _run(model: onnx.ModelProto, x: np.ndarray) -> list[np.ndarray]:
    s = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return s.run(None, {"x": x})


def test_smoothing_changes_no_float_result_and_evens_out_outliers():
    model = _graph()
    x = np.random.default_rng(1).normal(size=(16, 4)).astype(np.float32)
    x[:, 2] *= 50.0  # one outlier channel, as LayerNorm outputs have
    assert {k: [n.name for n in v] for k, v in groups(model).items()} == {"x": ["first", "second"], "z": ["third"]}
    maxima = activation_maxima(model, [{"x": x}])
    np.testing.assert_allclose(maxima["x"], np.abs(x).max(0))
    out = smoothed(model, maxima, 0.6)
    onnx.checker.check_model(out)
    for a, b in zip(_run(model, x), _run(out, x)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)
    # One Mul per smoothed activation, right after its producer; each reader has its own weight copy.
    muls = [n for n in out.graph.node if n.name.endswith("/SmoothMul")]
    assert sorted(m.input[0] for m in muls) == ["x", "z"]
    weights = {i.name for i in out.graph.initializer}
    assert "w1" not in weights and {n.input[1] for n in out.graph.node if n.op_type == "MatMul"} <= weights
    assert len({n.input[1] for n in out.graph.node if n.op_type == "MatMul"}) == 3
    # The outlier channel is divided down: the channel maxima the activation quantizer sees are closer.
    scale = numpy_helper.to_array(next(i for i in out.graph.initializer if i.name == "x/smooth_scale"))
    seen = maxima["x"] * scale
    assert seen.max() / seen.min() < 0.5 * maxima["x"].max() / maxima["x"].min()


def test_layer_ranking_compares_sequence_first_outputs_sample_by_sample(tmp_path):
    """rank_layers runs each fake-quantized graph and compares it with references whose batch axis
    is first (quantize.runner.cpu_runner's rows): a ``[seq, batch, ...]`` output is put in the same
    order, so it is not compared step against sample (shapes [5, 2, .] against [2, 5, .])."""
    from types import SimpleNamespace

    from edgeai.data import compare
    from edgeai.quantize.runner import batch_first
    from edgeai.quantize.sensitivity import rank_layers

    model = _graph()
    for value in (*model.graph.input, *model.graph.output):
        dims = value.type.tensor_type.shape.dim
        dims.insert(0, onnx.TensorShapeProto.Dimension(dim_param="seq"))
        dims[1].dim_param = "batch"
    onnx.save(model, str(tmp_path / "seq.onnx"))
    pkg = SimpleNamespace(manifest={"outputs": [{"name": o.name, "shape": ["seq", "batch", 4]} for o in model.graph.output]})
    first = batch_first(pkg)
    rng = np.random.default_rng(2)
    feeds = [{"x": rng.normal(size=(5, 2, 4)).astype(np.float32)} for _ in range(3)]
    ref = compare.run_batches(lambda f: first(dict(zip(["y2", "y3"], _run(model, f["x"])))), feeds)
    assert ref["y2"].shape == (6, 5, 3)  # 3 feeds of batch 2: 6 samples of 5 steps
    ranked = rank_layers(tmp_path / "seq.onnx", feeds, ref, "tensor", first=first)
    assert sorted(ranked) == ["first", "second", "third"]
