"""``int8`` for text models: dynamic INT8 within the package's accuracy budget.

If the budget is missed on the tuning sentences, the most sensitive layers are kept in float, a
few more each round, until it holds. Sensitivity (see sensitivity.py) is measured by simulating
the quantization of one layer at a time, which takes seconds per layer instead of a full
quantizer run; every candidate model is then made by the real quantizer and measured.
Held-out sentences are never looked at here: the runner records accuracy on those.
"""

from __future__ import annotations

from pathlib import Path

from edgeai.data import compare as measure
from edgeai.data.feeds import input_kind, text_feeds
from edgeai.errors import InputError
from edgeai.package import Package

from ..runner import Context, Step, cpu_runner
from .dynamic import dynamic_int8

# How many of the most sensitive layers each round keeps in float.
ROUNDS = (2, 4, 6, 8, 10, 12, 16, 24, 32)


class BudgetSearch(Step):
    name = "dynamic-within-budget"
    variant = "int8"

    def requires(self, pkg: Package) -> None:
        if input_kind(pkg) != "text":
            raise InputError(f"The budget search tunes on sentences; {pkg.name!r} does not take text.")

    def source(self, pkg: Package, ctx: Context) -> str:
        # Quantize the fused graph when there is one (its Attention becomes QAttention).
        return "optimized" if "optimized" in pkg.variants else "fp32"

    def run(self, pkg: Package, src: Path, dest: Path, work: Path, ctx: Context) -> dict:
        from edgeai.data.texts import TUNING

        from ..sensitivity import rank_layers

        # The package's own budget, ``also`` minimums included; none recorded: any agreement
        # will do, as in variant choice (edgeai.pipeline.meets_budget).
        budget = pkg.manifest.get("budget")
        tuning = text_feeds(pkg, ctx.tuning or TUNING)
        ref = measure.run_batches(cpu_runner(pkg, pkg.variant_path("fp32")), tuning)

        def meets(path: Path) -> tuple[bool, dict]:
            figs = measure.compare(ref, measure.run_batches(cpu_runner(pkg, path), tuning), pkg.task)
            return measure.budget_met(budget, figs), figs

        ctx.say("quantizing weights to INT8 (dynamic, per-channel)")
        recipe = dynamic_int8(src, dest, ctx.per_channel)
        ok, figs = meets(dest)
        if ok:
            return {**recipe, "tuning": figs}
        metric, floor = _missed(budget, figs)
        ctx.say(f"ranking layers by sensitivity (all-INT8 {metric} on the tuning texts is "
                f"{figs.get(metric, 0):.4f}, budget {floor})")
        ranked = rank_layers(src, tuning, ref, pkg.task)
        # 2, 4, 6, ... and, if still missed, every candidate: a short ranking is tried to its end.
        for k in sorted({min(k, len(ranked)) for k in ROUNDS} - {0}):
            ctx.say(f"quantizing with the {k} most sensitive of {len(ranked)} layers kept in float")
            recipe = dynamic_int8(src, dest, ctx.per_channel, ranked[:k])
            ok, figs = meets(dest)
            if ok:
                break
        return {**recipe, "tuning": figs, "budget_met_on_tuning": ok}


def _missed(budget: dict, figs: dict) -> tuple[str, float]:
    """The budget's figure that ``figs`` falls short of (its main metric first) and its minimum."""
    floors = {budget["metric"]: budget["min"], **budget.get("also", {})}
    return next(((k, v) for k, v in floors.items() if figs.get(k, -1.0) < v), (budget["metric"], budget["min"]))
