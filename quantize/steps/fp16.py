"""``fp16``: the graph's weights and arithmetic converted to float16, its inputs and outputs
kept float32 (callers feed and read what they always did).

Precision lives in the graph: CUDA runs fp16 kernels from it, and TensorRT builds an fp16
engine (edgeai turns on its fp16 builder flag for this variant, see
``providers.tensorrt_flags``, which ONNX Runtime's weakly typed networks need). The converter is
ONNX Runtime's own (``onnxruntime.transformers.float16``), which keeps ops that misbehave in
float16 (its default block list) in float32 and clamps weights to the float16 range. Made from
``fp32`` by default: the portable graph that TensorRT compiles whole; ``made_from="optimized"``
keeps ONNX Runtime's fused transformer ops for the CUDA provider. Accuracy against fp32 is
measured on the held-out inputs on this machine's CPU (ONNX Runtime runs float16 there too);
GPU kernels accumulate differently, so ``bench``/``report`` on the GPU are the final word.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import onnx

from edgeai.package import Package

from ..runner import Context, Step


class Float16(Step):
    name = "fp16"
    variant = "fp16"

    def source(self, pkg: Package, ctx: Context) -> str:
        return ctx.made_from or "fp32"

    def run(self, pkg: Package, src: Path, dest: Path, work: Path, ctx: Context) -> dict:
        import onnxruntime as ort
        from onnxruntime.transformers.float16 import (
            DEFAULT_OP_BLOCK_LIST,
            convert_float_to_float16,
        )
        from onnxruntime.transformers.onnx_model import OnnxModel

        ctx.say(f"converting {self.source(pkg, ctx)} to float16 (inputs and outputs stay float32)")
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            converted = convert_float_to_float16(onnx.load(str(src)), keep_io_types=True)
        clamped = sum("truncated" in str(w.message) or "out of" in str(w.message) for w in caught)
        # The converter appends the casts of the kept float32 inputs after the nodes that read them:
        # ONNX Runtime sorts a graph as it loads it, but the ONNX checker (and so `edgeai optimize
        # FILE.onnx` given this file) refuses one that is not topologically sorted.
        OnnxModel.graph_topological_sort(converted.graph)
        onnx.save(converted, str(dest))
        blocked = sorted({n.op_type for n in converted.graph.node} & set(DEFAULT_OP_BLOCK_LIST))
        return {"tool": f"onnxruntime.transformers.float16 {ort.__version__}", "keep_io_types": True,
                "float32_ops": blocked, "clamp_warnings": clamped, "accuracy_measured_on": "cpu"}
