"""Which layers lose most when quantized alone: simulated dynamic INT8, one layer at a time.

ONNX Runtime's quantizer has no per-layer sensitivity report for dynamic quantization, and
running it once per layer costs a full model rewrite each time (~6 s for MiniLM). Instead each
candidate layer is fake-quantized in an in-memory copy of the float graph, the way dynamic
quantization treats it: weights rounded per output channel to symmetric int8, the activation
input rounded per call to asymmetric uint8 (``DynamicQuantizeLinear`` -> ``DequantizeLinear``).
The drop in agreement with fp32 on the tuning inputs ranks the layers. Measured on MiniLM
(benchmarks/results/bert.md): keeping the top of this ranking in float lifts the lowest cosine
faster than ranking by activation range.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Callable

import numpy as np
import onnx
from onnx import helper, numpy_helper

from edgeai.data import compare as measure

# What quantize_dynamic turns into integer kernels and what has a weight we can round.
CANDIDATE_OPS = ("MatMul", "Attention", "Gemm")


def candidates(model: onnx.ModelProto) -> list[str]:
    """Named layers with a weight; the quantizer keeps a layer in float by name, so an unnamed one cannot be."""
    weights = {i.name for i in model.graph.initializer}
    return [n.name for n in model.graph.node
            if n.name and n.op_type in CANDIDATE_OPS and len(n.input) > 1 and n.input[1] in weights]


def fake_quantized(model: onnx.ModelProto, name: str, reduce_range: bool = False) -> onnx.ModelProto:
    """A copy of ``model`` with node ``name``'s weight and activation input int8-rounded; the
    weight to [-64, 64] with ``reduce_range``, the quantizer's symmetric 7-bit range
    (onnxruntime.quantization.quant_utils.get_qmin_qmax_for_qType)."""
    m = copy.deepcopy(model)
    nodes = list(m.graph.node)
    idx = next(i for i, n in enumerate(nodes) if n.name == name)
    node = nodes[idx]
    init = next(i for i in m.graph.initializer if i.name == node.input[1])
    w = numpy_helper.to_array(init).astype(np.float32)
    axis = 0 if node.op_type == "Gemm" and any(a.name == "transB" and a.i for a in node.attribute) else w.ndim - 1
    reduce = tuple(d for d in range(w.ndim) if d != axis)
    lo, hi = (-64, 64) if reduce_range else (-127, 127)
    scale = np.abs(w).max(axis=reduce, keepdims=True) / ((hi - lo) / 2)
    scale[scale == 0] = 1.0
    init.CopyFrom(numpy_helper.from_array((np.clip(np.round(w / scale), lo, hi) * scale).astype(np.float32), init.name))
    q = [f"{name}/edgeai_fq_{s}" for s in ("y", "scale", "zp", "x")]
    sim = [helper.make_node("DynamicQuantizeLinear", [node.input[0]], q[:3]), helper.make_node("DequantizeLinear", q[:3], [q[3]])]
    node.input[0] = q[3]
    del m.graph.node[:]
    m.graph.node.extend(nodes[:idx] + sim + nodes[idx:])
    return m


def rank_layers(src: Path, feeds: list[dict[str, np.ndarray]], reference: dict[str, np.ndarray], task: str,
                *, first: Callable[[dict], dict], per_cost: bool = True, reduce_range: bool = False) -> list[str]:
    """Candidate layer names, the best to keep in float first.

    ``per_cost``: by accuracy lost per unit of work, the loss of quantizing the layer alone
    divided by its weight's size (multiply-adds per token), so that a small layer that costs
    a little accuracy stays float before a large one that costs a little more: MiniLM's FFN
    matmuls are 4x the size of its attention projections and carry most of its time.
    ``reduce_range``: the weights as the quantizer's 7-bit ones (see fake_quantized).
    ``first``: ``outputs -> outputs`` with each batch axis first, as ``reference`` was made
    (quantize.runner.batch_first). Required: a sequence-first output compared as it comes
    would be compared step by step, not sample by sample, and rank the layers wrongly."""
    import onnxruntime as ort

    model = onnx.load(str(src))
    so = ort.SessionOptions()
    so.log_severity_level = 3
    scores = {}
    for name in candidates(model):
        session = ort.InferenceSession(fake_quantized(model, name, reduce_range).SerializeToString(), so, providers=["CPUExecutionProvider"])
        names = [o.name for o in session.get_outputs()]
        out = measure.run_batches(lambda f: first(dict(zip(names, session.run(None, f)))), feeds)
        scores[name] = loss(measure.compare(reference, out, task), task)
    if per_cost:
        size = weight_sizes(model, scores)
        scores = {k: v / max(size[k], 1) for k, v in scores.items()}
    return sorted(scores, key=scores.get, reverse=True)


def loss(figs: dict, task: str) -> float:
    """One number for how far a variant's outputs are from fp32's, lower is better."""
    if task == "text-embedding":
        return (1 - figs["cosine_min"]) + (1 - figs["cosine_mean"])
    return figs["mean_abs_diff"]


def weight_sizes(model: onnx.ModelProto, names) -> dict[str, int]:
    """Weight elements (multiply-adds per token) of each named layer."""
    return {n.name: _weight_size(model, n) for n in model.graph.node if n.name in names}


def _weight_size(model: onnx.ModelProto, node) -> int:
    init = next((i for i in model.graph.initializer if i.name == node.input[1]), None)
    return int(np.prod(init.dims)) if init is not None else 0
