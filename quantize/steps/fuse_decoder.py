"""``optimized`` for text-generation decoders: ONNX Runtime's transformer optimizer (model type gpt2).

On Optimum's Llama/Qwen2-style decoders it fuses each layer's rotary embedding into one
``RotaryEmbedding`` and each residual add + RMS norm into ``SkipSimplifiedLayerNormalization``
(measured on a SmolLM-135M-shaped Llama, one decode step after 128 cached tokens: 60 of each,
26.9 -> 23.3 ms at 2 threads on an AMD EPYC with AVX-512 VNNI). Attention itself is not fused:
the optimizer does not recognise these graphs' attention. No Gemm is formed (opt_level 0), so
the int8 and int4 steps quantize this graph rather than the plain one. The fused ops are ONNX
Runtime contrib ops that the CPU and CUDA providers both run. Unlike SkipLayerNormalization,
which edgeai's CPU sessions leave unfused (edgeai._ortcache), the RMS form's CPU kernel costs less
than the norm and Add it replaces (50 us against 29 + 34, benchmarks/results/generate.md).
"""

from __future__ import annotations

from pathlib import Path

from edgeai.errors import InputError
from edgeai.package import Package

from ..runner import Context, Step
from ._ort import quiet
from .optimize import graph_recipe

FUSED_FOR = "text generation"  # the recipe's mark: the weight steps start from this graph


def decoder_source(pkg: Package) -> str:
    """What int8 and int4 quantize in a generation package: the fused decoder when there is one."""
    recipe = pkg.variants.get("optimized", {}).get("recipe", {})
    return "optimized" if recipe.get("fused_for") == FUSED_FOR else "fp32"


class FuseDecoder(Step):
    name = "fuse-decoder"
    variant = "optimized"

    def requires(self, pkg: Package) -> None:
        if "generation" not in pkg.manifest:
            raise InputError(f"The decoder fusions apply to text-generation packages; {pkg.name!r} is not one.")

    def run(self, pkg: Package, src: Path, dest: Path, work: Path, ctx: Context) -> dict:
        import onnxruntime as ort
        from onnxruntime.transformers.fusion_options import FusionOptions
        from onnxruntime.transformers.optimizer import optimize_model

        ctx.say("fusing the decoder's attention, norms and rotary embeddings where it has them (ONNX Runtime transformer optimizer)")
        with quiet("onnxruntime.transformers"):
            model = optimize_model(str(src), model_type="gpt2", num_heads=0, hidden_size=0,
                                   optimization_options=FusionOptions("gpt2"), opt_level=0, use_gpu=False)
            fusions = {k: int(v) for k, v in model.get_fused_operator_statistics().items() if v}
            _trim_rotary_tables(model.model, int(pkg.manifest["generation"]["max_length"]))
            model.save_model_to_file(str(dest))
        recipe = {"tool": f"onnxruntime.transformers.optimizer {ort.__version__}", "model_type": "gpt2",
                  "fused_for": FUSED_FOR, "fusions": fusions}
        return graph_recipe(src, dest, recipe)


def _trim_rotary_tables(model, positions: int) -> None:
    """The fused RotaryEmbedding's cos/sin tables, cut to the positions the package allows: the
    optimizer writes 131,072 rows (33 MB for a 64-wide head) whatever the model's length."""
    from onnx import numpy_helper

    tables = {n.input[i] for n in model.graph.node if n.op_type == "RotaryEmbedding" for i in (2, 3) if len(n.input) > i}
    for init in model.graph.initializer:
        if init.name in tables and init.dims and init.dims[0] > positions:
            init.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(init)[:positions].copy(), init.name))
