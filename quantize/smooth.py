"""SmoothQuant-style smoothing before dynamic INT8: move activation outliers into the weights.

Dynamic INT8 rounds each activation matrix with one scale per call (per tensor), so a few
channels with large values (LayerNorm outputs of BERT-style models have them) cost every other
channel its resolution, while the weights are rounded per output channel and have room to
spare. Smoothing (Xiao et al., 2023, "SmoothQuant") divides input channel j of a MatMul's
activation by s_j and multiplies row j of its weight by s_j, which leaves the float product
unchanged and evens out what the activation quantizer sees:
``s_j = max|X_j| ** alpha / max|W_j| ** (1 - alpha)``.

Why by hand: ONNX Runtime's SmoothQuant lives inside ``quantize_static`` (through Intel
Neural Compressor) and smooths for static QDQ only; the dynamic quantizer, the one that is
fastest for these models on CPU, has none. The rewrite here is a graph edit: one ``Mul`` by
1/s per activation that feeds weighted MatMuls (the MatMuls sharing an input share s), the
weights rescaled in place. Measured on all-MiniLM-L6-v2, s128, every MatMul INT8
(benchmarks/results/bert-int8.md): held-out lowest cosine 0.970 -> 0.980 (alpha 0.6), and the
24 Muls (four per layer) cost about 0.8 ms of 9.2.
"""

from __future__ import annotations

import copy

import numpy as np
import onnx
from onnx import helper, numpy_helper

# Alphas the search tries (the paper's default is 0.5; MiniLM's best were 0.6-0.7).
ALPHAS = (0.5, 0.6, 0.7, 0.8)
# Scales stay within this factor of 1, so that a channel that is (nearly) always zero on the
# tuning inputs does not get a huge weight row.
LIMIT = 100.0


def groups(model: onnx.ModelProto) -> dict[str, list[onnx.NodeProto]]:
    """Float activations and the MatMuls with a 2-d weight initializer that read them."""
    weights = {i.name: i for i in model.graph.initializer}
    by_input: dict[str, list[onnx.NodeProto]] = {}
    for node in model.graph.node:
        if node.op_type == "MatMul" and node.input[1] in weights and len(weights[node.input[1]].dims) == 2:
            by_input.setdefault(node.input[0], []).append(node)
    return by_input


def activation_maxima(model: onnx.ModelProto, feeds: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Per-channel largest |value| of each smoothable activation over ``feeds`` (last axis)."""
    import onnxruntime as ort

    names = list(groups(model))
    probe = copy.deepcopy(model)
    known = {o.name for o in probe.graph.output}
    probe.graph.output.extend(helper.make_tensor_value_info(n, onnx.TensorProto.FLOAT, None) for n in names if n not in known)
    so = ort.SessionOptions()
    so.log_severity_level = 3
    session = ort.InferenceSession(probe.SerializeToString(), so, providers=["CPUExecutionProvider"])
    outs = [o.name for o in session.get_outputs()]
    maxima: dict[str, np.ndarray] = {}
    for feed in feeds:
        got = dict(zip(outs, session.run(None, feed)))
        mask = feed.get("attention_mask")
        for n in names:
            x = got[n]
            # Padding positions are computed but never read: leave them out of the ranges.
            rows = x[mask.astype(bool)] if mask is not None and x.shape[:2] == mask.shape else x.reshape(-1, x.shape[-1])
            m = np.abs(rows).max(axis=0)
            maxima[n] = np.maximum(maxima[n], m) if n in maxima else m
    return maxima


def smoothed(model: onnx.ModelProto, maxima: dict[str, np.ndarray], alpha: float) -> onnx.ModelProto:
    """A copy of ``model`` with every smoothable activation divided by s and its weights multiplied by s."""
    m = copy.deepcopy(model)
    weights = {i.name: i for i in m.graph.initializer}
    after: dict[str, list[onnx.NodeProto]] = {}
    for act, readers in groups(m).items():
        if act not in maxima:
            continue
        ws = [numpy_helper.to_array(weights[n.input[1]]).astype(np.float32) for n in readers]
        w_max = np.max([np.abs(w).max(axis=1) for w in ws], axis=0)
        s = np.maximum(maxima[act], 1e-5) ** alpha / np.maximum(w_max, 1e-5) ** (1 - alpha)
        s = np.clip(s, 1 / LIMIT, LIMIT).astype(np.float32)
        for n, w in zip(readers, ws):
            # A weight shared by two MatMuls would be scaled twice: give each reader its own.
            name = f"{n.input[1]}/smoothed"
            while name in weights:
                name += "_"
            weights[name] = numpy_helper.from_array(w * s[:, None], name)
            m.graph.initializer.append(weights[name])
            n.input[1] = name
        inv, out = f"{act}/smooth_scale", f"{act}/smoothed"
        m.graph.initializer.append(numpy_helper.from_array(1.0 / s, inv))
        after.setdefault(act, []).append(helper.make_node("Mul", [act, inv], [out], name=f"{act}/SmoothMul"))
        for n in readers:
            n.input[0] = out
    # Each Mul goes right after the node that makes its input (graph inputs: first), keeping
    # the node list topologically sorted; weights no reader uses any more are dropped.
    nodes = list(m.graph.node)
    made = {o for n in nodes for o in n.output}
    order = [mul for act, muls in after.items() if act not in made for mul in muls]
    for n in nodes:
        order.append(n)
        order.extend(mul for o in n.output for mul in after.get(o, []))
    del m.graph.node[:]
    m.graph.node.extend(order)
    used = {i for n in order for i in n.input}
    keep = [i for i in m.graph.initializer if i.name in used]
    del m.graph.initializer[:]
    m.graph.initializer.extend(keep)
    return m
