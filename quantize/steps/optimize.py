"""``optimized``: ONNX Runtime's offline graph optimization at the portable *extended* level.

The extended level (constant folding, Conv+BN/activation fusions, transformer fusions) is
portable across CPUs; the layout transforms of the *all* level are hardware specific and are
applied at load time instead (see DESIGN.md, variant choice).
"""

from __future__ import annotations

from pathlib import Path

from edgeai.package import Package

from ..runner import Context, Step


def graph_recipe(src: Path, dest: Path, recipe: dict) -> dict:
    """``recipe`` with the node counts before and after, and the op types the optimizer added. A
    ``fusions`` count the recipe brings (the transformer optimizer's statistics, which count every
    node of each kind) keeps only the kinds the source graph did not already have."""
    from edgeai.data.graphs import op_histogram

    before, after = op_histogram(src), op_histogram(dest)
    recipe = {**recipe, "nodes_before": sum(before.values()), "nodes_after": sum(after.values())}
    if "fusions" in recipe:
        recipe["fusions"] = {k: v for k, v in recipe["fusions"].items() if k not in before}
    else:
        recipe["fusions"] = sorted(k for k in after if k not in before)
    return recipe


class Optimize(Step):
    name = "optimize"
    variant = "optimized"

    def run(self, pkg: Package, src: Path, dest: Path, work: Path, ctx: Context) -> dict:
        import onnxruntime as ort

        from edgeai._ortcache import plain_cpu_session
        from edgeai.session import session_options

        ctx.say("optimizing the graph (ONNX Runtime, extended level)")
        so = session_options()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
        so.optimized_model_filepath = str(dest)
        # Fusions slow on the CPU are left to load time, where the provider is known (edgeai._ortcache).
        plain_cpu_session(src, so)
        return graph_recipe(src, dest, {"tool": f"onnxruntime {ort.__version__}", "level": "extended"})
