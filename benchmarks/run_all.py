"""The three model families against PyTorch eager, in one run.

    python benchmarks/run_all.py [--rounds 5] [--threads 2] [--batch 1] [--out run_all-HOST.md]

For each built-in model (EfficientNet-Lite0, the sentiment LSTM, all-MiniLM-L6-v2; built into
$EDGEAI_HOME on first use) it calls ``edgeai.bench(..., against="torch")``: every variant and
PyTorch eager on the same weights, each in its own fresh process, rounds alternating. Writes
benchmarks/results/run_all.md, the table between the run_all markers in benchmarks/README.md,
and the chart benchmarks/run_all.png beside it (needs the report extra, matplotlib). With
``--out NAME`` it writes benchmarks/results/NAME only and leaves the README and chart alone: figures
from a second kind of CPU sit beside the first instead of replacing them.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import _report  # noqa: E402  (benchmarks/ is a folder of scripts, not a package)


def models() -> list[tuple[str, str]]:
    """(family, model) for every family that builds a model by name, as the registry lists them."""
    from edgeai.families import builtin_models

    return [(fam.name, name) for name, fam in builtin_models().items()]


VARIANTS = ("fp32", "optimized", "int8")
START, END = "<!-- run_all:start -->", "<!-- run_all:end -->"


def measure(rounds: int, threads: int | None, batch: int) -> list[dict]:
    from edgeai import bench
    from edgeai.home import ensure_builtin
    from edgeai.package import Package
    from edgeai.pipeline import choose_variant, resolve_threads
    from edgeai.providers import CPU

    rows = []
    for family, name in models():
        pkg_dir = ensure_builtin(name, progress=lambda m: print(f"building {name}: {m}", file=sys.stderr))
        # auto=True: "edgeai default" is timed as edgeai.load runs it, on its recorded thread count.
        doc = bench(pkg_dir, batches=(batch,), threads=threads, rounds=rounds, against="torch", auto=True,
                    on_step=lambda d, t, label: print(f"{name}: {d}/{t} {label}", file=sys.stderr))
        pkg = Package.open(pkg_dir)
        default, _ = choose_variant(pkg, CPU)
        own = None if threads else resolve_threads(pkg, default, CPU)[0]
        by = {r["variant"]: r for r in doc["results"] if r["engine"] == "pytorch" or r["threads"] == threads}
        auto = next(r for r in doc["results"] if r["variant"] == default and r["threads"] == (own or threads))
        rows.append({"family": family, "model": pkg.name, "inputs": doc["inputs"], "default": default, "auto": auto,
                     "auto_threads": own, "torch": by["pytorch"], **{v: by[v] for v in VARIANTS if v in by}})
    return rows


def table(rows: list[dict]) -> str:
    lines = ["| family | model | PyTorch eager p50 | fp32 | optimized | int8 | edgeai default |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        cells = [f"{r[v]['vs_torch']:.2f} ({r[v]['p50_ms']:.2f} ms)" if v in r else "-" for v in VARIANTS]
        d, on = r["auto"], f", {r['auto_threads']} thread" if r["auto_threads"] else ""
        lines.append(f"| {r['family']} | {r['model']} | {r['torch']['p50_ms']:.2f} ms | {' | '.join(cells)} | "
                     f"**{d['vs_torch']:.2f}** ({r['default']}{on}) |")
    return "\n".join(lines)


def ratio(a: dict, b: dict) -> tuple[float, float]:
    """Median and best of the per-round ratios of ``a`` to ``b`` (the same round of each: the
    order alternates, so a round's neighbours load both alike)."""
    import statistics

    per = [x / y for x, y in zip(a["p50_by_round_ms"], b["p50_by_round_ms"])]
    return statistics.median(per), min(per)


def targets(rows: list[dict]) -> str:
    """INT8 against fp32, and the default (as edgeai.load runs it) against fp32 and PyTorch eager,
    per round: median and best."""
    lines = ["| model | int8 / fp32, median (best round) | edgeai default / edgeai fp32 | edgeai default / PyTorch eager |",
             "|---|---|---|---|"]
    for r in rows:
        i8 = "%.2f (%.2f)" % ratio(r["int8"], r["fp32"]) if "int8" in r else "-"
        lines.append(f"| {r['model']} | {i8} | {'%.2f (%.2f)' % ratio(r['auto'], r['fp32'])} | "
                     f"{'%.2f (%.2f)' % ratio(r['auto'], r['torch'])} |")
    return "\n".join(lines)


def chart(rows: list[dict], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, ax = plt.subplots(figsize=(7, 3.2))
    x = np.arange(len(rows))
    width = 0.25
    for i, v in enumerate(VARIANTS):
        vals = [r[v]["vs_torch"] if v in r else 0 for r in rows]
        bars = ax.bar(x + (i - 1) * width, vals, width, label=v)
        ax.bar_label(bars, labels=[f"{y:.2f}" for y in vals], fontsize=7, padding=2)
    ax.axhline(1.0, color="#555", lw=1, ls="--")
    ax.text(len(rows) - 0.5, 1.0, "PyTorch eager = 1", va="bottom", ha="right", fontsize=8, color="#555")
    ax.set_xticks(x, [f"{r['family']}\n{r['model']}" for r in rows])
    ax.set_ylabel("latency / PyTorch eager (p50)")
    ax.set_ylim(0, 1.15)
    ax.legend(fontsize=8, ncols=3, loc="upper left")
    fig.tight_layout()
    fig.savefig(out, dpi=120)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--readme", default=str(HERE / "README.md"))
    ap.add_argument("--out", default=None, help="a results file name for another host's figures (README untouched)")
    args = ap.parse_args()
    rows = measure(args.rounds, args.threads, args.batch)
    threads = args.threads or "default"
    body = (f"All three families, CPU, batch {args.batch}, threads {threads}, {args.rounds} rounds: each cell is "
            "edgeai's latency over PyTorch eager's on the same weights (p50, lower is better), measured by "
            "`edgeai.bench(..., against=\"torch\")` in one run, every engine in its own process.  \n"
            + _report.machine_line(args.threads or "default") + "\n"
            + "Inputs: " + "; ".join(f"{r['family']}: {r['inputs']}" for r in rows) + ".\n\n" + table(rows) + "\n\n"
            + f"Ratios round by round ({args.rounds} rounds, each engine's round median against the same round of "
            "the other):\n\n" + targets(rows) + "\n")
    out = f" --out {args.out}" if args.out else ""
    _report.write(f"# All families vs PyTorch eager\n\n`python benchmarks/run_all.py --rounds {args.rounds}{out}`\n\n{body}",
                  str(HERE / "results" / (args.out or "run_all.md")))
    if args.out:
        return
    readme = Path(args.readme)
    text = readme.read_text()
    block = f"{START}\n{body}\n![latency / PyTorch eager per family and variant](run_all.png)\n{END}"
    if START in text:
        text = re.sub(re.escape(START) + ".*?" + re.escape(END), lambda _: block, text, flags=re.S)
    else:
        text = text.rstrip() + "\n\n## All families at once (`python benchmarks/run_all.py`)\n\n" + block + "\n"
    readme.write_text(text)
    chart(rows, HERE / "run_all.png")
    print(f"wrote {readme}, {HERE / 'run_all.png'}", file=sys.stderr)


if __name__ == "__main__":
    main()
