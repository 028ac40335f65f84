"""``int8`` by dynamic quantization: int8 weights, activations quantized at run time."""

from __future__ import annotations

from pathlib import Path

import onnx

from edgeai.package import Package

from ..runner import Context, Step
from ._ort import quiet


def dynamic_int8(src: Path, dest: Path, per_channel: bool, exclude: list[str] | None = None,
                 reduce_range: bool = False) -> dict:
    """``quantize_dynamic`` of ``src`` to ``dest``, the nodes named in ``exclude`` kept in float; its recipe.

    ``reduce_range``: 7-bit weights, so that AVX2's u8 x s8 kernel (no VNNI) cannot saturate its
    int16 pair sums (see saturation.py)."""
    from onnx.shape_inference import InferenceError
    from onnxruntime.quantization import QuantType, quantize_dynamic

    # quantize_dynamic first rewrites each Gemm as a MatMul named "<gemm>_MatMul" (+ "_Add"), and
    # matches nodes_to_exclude against the rewritten graph: a Gemm's own name excluded nothing.
    skip = [n for name in (exclude or []) for n in (name, f"{name}_MatMul")]

    def run(model: Path) -> None:
        # The quantizer logs a generic "consider pre-processing" on the root logger.
        with quiet():
            # DefaultTensorType: the fused contrib ops have no type inference in the quantizer (FACTS.md).
            quantize_dynamic(str(model), str(dest), per_channel=per_channel, weight_type=QuantType.QInt8,
                             reduce_range=reduce_range, nodes_to_exclude=skip,
                             extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})

    try:
        run(src)
    except InferenceError as first:
        # The quantizer's strict shape inference can disagree with the shapes the exporter wrote
        # (torch's dynamo exporter records the example's size of a reshaped nn.TransformerEncoder
        # tensor: "(32) vs (2)"); the graph itself runs. Without those recorded shapes the
        # quantizer infers its own. Only then: a fused graph's contrib ops need the recorded ones.
        model = onnx.load(str(src))
        del model.graph.value_info[:]
        bare = dest.with_name(f".{dest.stem}.no-value-info.onnx")
        onnx.save(model, str(bare))
        try:
            run(bare)
        except Exception:
            raise first from None  # the shapes' dispute is the more telling error
        finally:
            bare.unlink(missing_ok=True)
    return {"method": "dynamic", "per_channel": per_channel, "weights": "int8 (7-bit range)" if reduce_range else "int8", "activations": "uint8 (per call)",
            "float_nodes": list(exclude or [])}


class Dynamic(Step):
    name = "dynamic"
    variant = "int8"

    def source(self, pkg: Package, ctx: Context) -> str:
        from .fuse_decoder import decoder_source

        return decoder_source(pkg)  # the fused decoder of a generation package, else fp32

    def run(self, pkg: Package, src: Path, dest: Path, work: Path, ctx: Context) -> dict:
        ctx.say("quantizing weights to INT8 (dynamic)")
        return dynamic_int8(src, dest, ctx.per_channel)
