"""``optimized`` for BERT-style encoders: ONNX Runtime's transformer optimizer (model type bert).

It fuses one Attention per layer, EmbedLayerNormalization and BiasGelu. The fused ops are ONNX
Runtime contrib ops that both the CPU and CUDA providers run; no hardware-specific layout is saved.
Add + LayerNormalization is not fused into SkipLayerNormalization here: that kernel is slow on the
CPU (edgeai._ortcache.CPU_DISABLED_OPTIMIZERS; MiniLM s128, 2 threads: this graph 13.3 ms without it,
14.2 ms with it), and the CUDA provider fuses it at load time, where it pays.
"""

from __future__ import annotations

from pathlib import Path

from edgeai.errors import InputError
from edgeai.package import Package

from ..runner import Context, Step
from ._ort import quiet
from .optimize import graph_recipe


class FuseTransformer(Step):
    name = "fuse-transformer"
    variant = "optimized"

    def requires(self, pkg: Package) -> None:
        if pkg.manifest["family"] != "transformer":
            raise InputError(f"The transformer optimizer applies to transformer packages; {pkg.name!r} is "
                             f"{pkg.manifest['family']!r}.")

    def run(self, pkg: Package, src: Path, dest: Path, work: Path, ctx: Context) -> dict:
        import onnxruntime as ort
        from onnxruntime.transformers.fusion_options import FusionOptions
        from onnxruntime.transformers.optimizer import optimize_model

        ctx.say("fusing Attention, the embeddings' LayerNorm and GELU (ONNX Runtime transformer optimizer, model type bert)")
        # The fuser cannot always read num_heads/hidden_size off the graph; the exporter records them.
        arch = pkg.manifest["provenance"].get("architecture", {})
        options = FusionOptions("bert")
        options.enable_skip_layer_norm = False  # see the module's docstring
        with quiet("onnxruntime.transformers"):
            model = optimize_model(str(src), model_type="bert", num_heads=int(arch.get("num_heads", 0)),
                                   hidden_size=int(arch.get("hidden_size", 0)),
                                   optimization_options=options, opt_level=0, use_gpu=False)
            # graph_recipe drops the kinds the export already had (its LayerNormalization ops, left unfused).
            fusions = {k: int(v) for k, v in model.get_fused_operator_statistics().items() if v}
            model.save_model_to_file(str(dest))
        recipe = {"tool": f"onnxruntime.transformers.optimizer {ort.__version__}", "model_type": "bert", "fusions": fusions}
        return graph_recipe(src, dest, recipe)
