"""Find the layers whose INT8 products overflow 16 bits on AVX2 CPUs without VNNI.

ONNX Runtime's u8 x s8 matrix kernel on AVX2 (``vpmaddubsw``) adds each pair of adjacent
uint8-activation x int8-weight products into a *saturating* int16. Where ReLU6 outputs sit at
255 and weights are large, the pair sum exceeds 32767 and is clipped: on EfficientNet-Lite0 this
took top-1 agreement with fp32 from 1.00 (the same QDQ model evaluated in float) down to 0.87.
ONNX Runtime's documented remedy is 7-bit weights (``reduce_range``); applying it only to the
layers that actually saturate keeps the other layers' precision. No library computes this, so
it is done here: run the fp32 model on a few calibration inputs, quantize each dense layer's
input with the scale/zero point the calibration chose, and count the pairs that overflow.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

INT16_MAX = 32767
SAMPLE_ROWS = 1000
CHUNK_ELEMENTS = 1 << 24  # int32 pair sums held at once (64 MB)


def gemm_transposed(node) -> bool:
    """Whether a Gemm's weight is stored outputs x K (``transB=1``), as Linear layers export."""
    return bool(next((a.i for a in node.attribute if a.name == "transB"), 0))


def _dense_layers(qdq: onnx.ModelProto):
    """(node, activation tensor, scale, zero point, int8 weight) for each quantized non-depthwise Conv/Gemm."""
    init = {i.name: i for i in qdq.graph.initializer}
    producer = {o: n for n in qdq.graph.node for o in n.output}
    for node in qdq.graph.node:
        if node.op_type not in ("Conv", "Gemm"):
            continue
        if any(a.name == "group" and a.i > 1 for a in node.attribute):
            continue  # depthwise convs use another kernel, which widens to 32 bits
        dq_x, dq_w = producer.get(node.input[0]), producer.get(node.input[1])
        if dq_x is None or dq_w is None or dq_x.op_type != "DequantizeLinear" or dq_w.input[0] not in init:
            continue
        q_x = producer.get(dq_x.input[0])
        if q_x is None or q_x.op_type != "QuantizeLinear":
            continue
        scale = numpy_helper.to_array(init[q_x.input[1]])
        zero = numpy_helper.to_array(init[q_x.input[2]])
        weight = numpy_helper.to_array(init[dq_w.input[0]]).astype(np.int32)
        if node.op_type == "Gemm" and not gemm_transposed(node):
            weight = weight.T  # stored K x outputs: rows are outputs here
        if node.op_type == "Conv" and weight.ndim == 3:  # Conv1d: a 1 x k kernel over a 1 x L image
            weight = weight[:, :, None, :]
        if node.op_type == "Conv" and weight.ndim != 4:
            continue  # Conv3d: not estimated (this check is for the AVX2 kernels of 2-D CNNs)
        yield node, q_x.input[0], float(scale), int(zero), weight


def _rows(a: np.ndarray, weight: np.ndarray, zero: int, op: str) -> tuple[np.ndarray, np.ndarray]:
    """Activation rows (pixels x K) and weight rows (outputs x K) in the kernel's K order."""
    if op == "Gemm" or a.ndim == 2:
        return a.reshape(a.shape[0], -1), weight.reshape(weight.shape[0], -1)
    if a.ndim == 3:  # Conv1d's N x C x L, as its weight was made 2-D above
        a = a[:, :, None, :]
    kh, kw = weight.shape[2:]
    if (kh, kw) == (1, 1):
        return a.transpose(0, 2, 3, 1).reshape(-1, a.shape[1]), weight[:, :, 0, 0]
    from numpy.lib.stride_tricks import sliding_window_view

    padded = np.pad(a, ((0, 0), (0, 0), (0, kh - 1), (0, kw - 1)), constant_values=zero)
    patches = sliding_window_view(padded, (kh, kw), axis=(2, 3))  # N C H W kh kw
    rows = patches.transpose(0, 2, 3, 4, 5, 1).reshape(-1, kh * kw * a.shape[1])
    return rows, weight.transpose(0, 2, 3, 1).reshape(weight.shape[0], -1)


def saturated_layers(fp32_path: Path, qdq_path: Path, feeds: list[dict], threshold: float = 0.01) -> dict[str, float]:
    """Dense layers (name -> share of outputs hit) where more than ``threshold`` of outputs saturate."""
    import onnxruntime as ort

    qdq = onnx.load(str(qdq_path))
    layers = list(_dense_layers(qdq))
    probe = onnx.load(str(fp32_path))
    have = {o.name for o in probe.graph.output}
    for name in {src for _, src, *_ in layers} - have - {i.name for i in probe.graph.input}:
        probe.graph.output.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
    so = ort.SessionOptions()
    so.log_severity_level = 3
    session = ort.InferenceSession(probe.SerializeToString(), so, providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    acts: dict[str, list[np.ndarray]] = {}
    for feed in feeds:
        for name, value in zip(names, session.run(None, feed)):
            acts.setdefault(name, []).append(value)
        for name, value in feed.items():
            acts.setdefault(name, []).append(value)
    rng = np.random.default_rng(0)
    hit: dict[str, float] = {}
    for node, src, scale, zero, weight in layers:
        # each feed's activation on its own: inputs of other sizes along a dynamic axis (a height)
        # give activations of other shapes, whose rows (pixels x K) still line up
        parts = [_rows(np.clip(np.round(x / scale) + zero, 0, 255).astype(np.int32), weight, zero, node.op_type)
                 for x in acts[src]]
        rows, w = np.concatenate([r for r, _ in parts]), parts[0][1]
        rows = rows[rng.choice(len(rows), min(len(rows), SAMPLE_ROWS), replace=False)]
        share = _overflow_share(rows, w)
        if share > threshold:
            hit[node.name] = round(share, 4)
    return hit


def _overflow_share(rows: np.ndarray, w: np.ndarray) -> float:
    """Share of (row, output) dot products in which some adjacent pair of products overflows int16."""
    k = rows.shape[1] - rows.shape[1] % 2
    pa, pw = rows[:, :k].reshape(len(rows), -1, 2), w[:, :k].reshape(w.shape[0], -1, 2)
    step = max(1, CHUNK_ELEMENTS // max(1, pw.shape[0] * pw.shape[1]))
    hits = 0
    for i in range(0, len(pa), step):
        a = pa[i : i + step]
        pairs = a[:, None, :, 0] * pw[None, :, :, 0] + a[:, None, :, 1] * pw[None, :, :, 1]
        hits += int((np.abs(pairs) > INT16_MAX).any(-1).sum())
    return hits / (len(pa) * pw.shape[0])
