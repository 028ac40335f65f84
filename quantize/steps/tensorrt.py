"""``int8`` for TensorRT: the QDQ graph TensorRT builds an INT8 engine from.

Int8 weights and activations with zero points of 0 (TensorRT supports symmetric quantization
only), biases left in float (a TensorRT DequantizeLayer takes int8/fp8/int4, not the int32
ONNX Runtime quantizes biases to), and Q/DQ around every quantized op so TensorRT, not ONNX
Runtime, decides what to fuse. Nothing is excluded and nothing gets 7-bit weights: those fixes
are for ONNX Runtime's AVX2 CPU kernels (static_qdq.py). Accuracy is measured with the Q/DQ
pairs simulated in float, the int32-accumulating arithmetic TensorRT uses.
"""

from __future__ import annotations

from pathlib import Path

from edgeai.data.feeds import calibration_feeds
from edgeai.package import Package

from ..runner import Context, Step
from ._ort import calibrated_qdq, preprocessed


class TensorRTQDQ(Step):
    name = "tensorrt-qdq"
    variant = "int8"
    simulate_qdq = True

    def run(self, pkg: Package, src: Path, dest: Path, work: Path, ctx: Context) -> dict:
        feeds = calibration_feeds(pkg, ctx.calibration, dynamic_ok=False)
        ctx.say(f"calibrating static INT8 for TensorRT (symmetric QDQ, per-channel, {ctx.calibrate}) on {len(feeds)} inputs")
        calibrated_qdq(preprocessed(src, work), dest, feeds, ctx.per_channel, "int8", method=ctx.calibrate,
                       extra_options={"ActivationSymmetric": True, "WeightSymmetric": True, "QuantizeBias": False})
        return {
            "method": "static", "preset": "tensorrt", "format": "QDQ", "per_channel": ctx.per_channel, "symmetric": True,
            "bias": "float",
            "activations": "int8", "weights": "int8", "calibration": {"method": ctx.calibrate, "samples": len(feeds)},
            "accuracy_measured_on": "cpu, Q/DQ simulated in float (int32-accumulating arithmetic, as TensorRT's)",
        }
