"""``int8`` for ONNX Runtime's CPU kernels: static QDQ calibrated on real inputs.

MinMax calibration by default (``--calibrate percentile`` for ONNX Runtime's other one),
per-channel int8 weights, uint8 activations. Measured on EfficientNet-Lite0
(benchmarks/results/cnn.md, cnn-int8-ptq.md): MinMax beat or matched Percentile and Entropy (the
outliers of the linear projection convs matter) and calibrates 6x faster; keeping the first conv in float lowers the
error further at no measurable cost; layers whose products overflow int16 on AVX2 get 7-bit
weights (see saturation.py).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import onnx

from edgeai.data.feeds import calibration_feeds
from edgeai.package import Package

from ..runner import Context, Step
from ._ort import calibrated_qdq, preprocessed


class StaticQDQ(Step):
    name = "static-qdq"
    variant = "int8"

    def run(self, pkg: Package, src: Path, dest: Path, work: Path, ctx: Context) -> dict:
        from ..saturation import saturated_layers

        feeds = calibration_feeds(pkg, ctx.calibration)
        rows = sum(int(next(iter(f.values())).shape[0]) if next(iter(f.values())).ndim else 1 for f in feeds)
        ctx.say(f"calibrating static INT8 (QDQ, per-channel, {ctx.calibrate}) on {len(feeds)} inputs"
                + (f" ({rows} rows)" if rows != len(feeds) else ""))
        pre = preprocessed(src, work)
        convs = [n for n in onnx.load(str(pre), load_external_data=False).graph.node if n.op_type in ("Conv", "Gemm")]
        # The stem conv stays float only where it is one of many: in a model of one or two convs it
        # would leave the "int8" variant mostly float (review: a one-conv model's only Conv stayed float)
        exclude = [convs[0].name] if convs[0:1] and convs[0].op_type == "Conv" and sum(n.op_type == "Conv" for n in convs) >= 3 else []

        def quantize(out: Path, overrides: dict) -> None:
            calibrated_qdq(pre, out, feeds, ctx.per_channel, "uint8", method=ctx.calibrate, nodes_to_exclude=exclude,
                           extra_options={"TensorQuantOverrides": overrides} if overrides else {})

        first = work / "first.onnx"
        quantize(first, {})
        hit = saturated_layers(pre, first, feeds[:: max(1, len(feeds) // 8)][:8])
        if hit:
            weight_of = {n.name: (n.input[1], _channel_axis(n)) for n in convs}
            # "axis" keeps the override per-channel (without it ORT silently goes per-tensor): the
            # output channels', 1 for a Gemm whose weight is not transposed (transB=0)
            quantize(dest, {weight_of[name][0]: [{"axis": weight_of[name][1], "reduce_range": True}] for name in hit})
        else:
            shutil.move(first, dest)  # the work folder is in $TMPDIR, often another filesystem (a tmpfs; review)
        return {
            "method": "static", "format": "QDQ", "per_channel": ctx.per_channel, "activations": "uint8", "weights": "int8",
            "calibration": {"method": ctx.calibrate, "samples": len(feeds)},
            "float_nodes": exclude,
            "reduce_range_nodes": hit,
        }


def _channel_axis(node) -> int:
    from ..saturation import gemm_transposed

    return 1 if node.op_type == "Gemm" and not gemm_transposed(node) else 0
