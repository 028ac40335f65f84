"""The report's charts, drawn with matplotlib (the ``report`` extra) from the page's figures."""

from __future__ import annotations

import math
from typing import Any

from .data.compare import budget_rule
from .providers import short_name


def charts(data: dict, plt) -> dict[str, Any]:
    """Latency per rung (p50 bar, p99 tick), the largest difference per rung, and every variant as
    a point of latency against its budget metric, with the budget line."""
    figs = {}
    timed = [r for r in data["rungs"] if r["latency"]]
    if timed:
        fig, ax = plt.subplots(figsize=(6.4, 1.3 + 0.4 * len(timed)))
        names = [r["rung"] for r in timed]
        p50 = [r["latency"]["p50_ms"] for r in timed]
        p99 = [r["latency"].get("p99_ms") for r in timed]
        from matplotlib.lines import Line2D
        from matplotlib.patches import Patch

        ax.barh(names, p50, color=["#8c8c8c" if n == "PyTorch" else "#2b6cb0" for n in names])
        for i, v in enumerate(p99):
            if v is not None:
                ax.plot([v, v], [i - 0.35, i + 0.35], color="#c53030", lw=2)
        handles = [Patch(color="#2b6cb0", label="p50, ONNX Runtime")]
        if "PyTorch" in names:
            handles.append(Patch(color="#8c8c8c", label="p50, PyTorch eager"))
        handles.append(Line2D([], [], color="#c53030", lw=2, label="p99"))
        h = data["headline"]
        ax.set_xlabel(f"latency, ms ({short_name(h['provider'])}, batch {h['batch']})")
        ax.invert_yaxis()
        ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
        ax.set_title("Latency per variant", fontsize=10)
        fig.tight_layout()
        figs["latency"] = fig
    diffs = [(r["rung"], max(o.get("max_abs_diff", 0.0) for o in r["outputs"].values()), r["compared_with"])
             for r in data["rungs"] if r["outputs"] and any("max_abs_diff" in o for o in r["outputs"].values())]
    if diffs:
        fig, ax = plt.subplots(figsize=(6.4, 1.3 + 0.4 * len(diffs)))
        finite = [d for _, d, _ in diffs if math.isfinite(d)]
        floor = min([d for d in finite if d > 0] or [1e-7]) / 10  # where "identical" (0) is drawn
        top = max([*finite, floor]) * 10  # where an infinite or NaN difference is drawn (matplotlib refuses them)
        bars = ax.barh([f"{n} vs {vs}" for n, _, vs in diffs], [max(d, floor) if math.isfinite(d) else top for _, d, _ in diffs],
                       color="#dd6b20")
        ax.bar_label(bars, labels=[("not finite" if not math.isfinite(d) else f"{d:.1e}" if d > 0 else "identical")
                                   for _, d, _ in diffs], fontsize=8, padding=3)
        ax.set_xscale("log")
        ax.set_xlim(floor / 2, top * 30)
        ax.set_xlabel("max abs difference of the outputs (log scale)")
        ax.invert_yaxis()
        ax.set_title("Error per variant", fontsize=10)
        fig.tight_layout()
        figs["error"] = fig
    tradeoff = _tradeoff(data, plt)
    if tradeoff is not None:
        figs["tradeoff"] = tradeoff
    return figs


def _tradeoff(data: dict, plt):
    """Each variant with a recorded latency and a budget figure as a point (latency, metric), the
    budget as a horizontal line: what is within budget, and what that costs in time."""
    budget = data.get("budget") or {}
    metric = budget.get("metric")
    # green by the whole budget (report.ladder's meets_budget: every floor), not the plotted metric alone
    points = [(r["rung"], r["latency"]["p50_ms"], r["metrics"][metric], r.get("meets_budget") is not False)
              for r in data["rungs"] if r["variant"] and r["latency"] and metric in r["metrics"]
              and math.isfinite(r["metrics"][metric])]
    if not metric or len(points) < 1:
        return None
    fig, ax = plt.subplots(figsize=(6.4, 3.6))
    times = [p[1] for p in points]
    span = max(max(times) - min(times), 0.05 * max(times), 1e-9)  # a label is about a sixth of the axis wide
    for i, (name, ms, value, ok) in enumerate(points):
        ax.scatter([ms], [value], color="#2f855a" if ok else "#c53030", zorder=3)
        # variants often sit on one point (optimized is as exact as fp32, and as fast): labels stacked, not overprinted
        near = sum(1 for _, m2, v2, _ok in points[:i] if abs(m2 - ms) <= 0.15 * span and abs(v2 - value) <= 0.01)
        ax.annotate(name, (ms, value), textcoords="offset points", xytext=(6, 4 + 10 * near), fontsize=8)
    ax.margins(y=0.2)  # room above the top point for stacked labels
    ax.axhline(budget["min"], color="#4a5568", ls="--", lw=1)
    ax.annotate(f"budget: {budget_rule(budget)}", (0.01, budget["min"]), xycoords=("axes fraction", "data"),
                textcoords="offset points", xytext=(0, 4), fontsize=8, color="#4a5568")
    h = data["headline"] or {}
    ax.set_xlabel(f"p50 latency, ms ({short_name(h.get('provider', ''))}, batch {h.get('batch', 1)})")
    ax.set_ylabel(metric.replace("_", " "))
    ax.set_title("Accuracy against latency (green: within the budget)", fontsize=10)
    fig.tight_layout()
    return fig
