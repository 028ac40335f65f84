"""Where a text package's fp32 and int8 runs spend their time, and the most INT8 could save on this CPU.

    python benchmarks/int8_profile.py [PKG] [--rounds 3] [--threads 2] [--out int8-profile-HOST.md]

ONNX Runtime's profiler, one fresh process per variant and round, the order alternating, splits
each run into: products with a weight (in float, or in INT8 with the activation's quantization
included), attention's own products (scores and context), and everything else. From the
weight products' shapes it gives each kind's speed in multiply-adds per second, and from those
roughly the most INT8 can give on this CPU: the fp32 run with every weight product at the INT8
kernels' measured speed and the rest as it is, as a ratio to fp32. A target that asks much more of
INT8 than that cannot be met by choosing which layers stay float. A fused graph's Attention nodes
(QKV products inside) count as attention products; the split is meant for the plain graph. Default package: the built-in all-MiniLM-L6-v2 (built on first use).

Why a profile of our own and not ``onnxruntime.tools``' profile summary: that one sums by op
type, and the question here needs MACs per product (from each node's input shapes).
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import _report  # noqa: E402  (benchmarks/ is a folder of scripts, not a package)

# Run in a fresh process: one variant, profiled. Prints one JSON line.
WORKER = r"""
import json, sys, numpy as np, onnxruntime as ort
path, feed, threads, runs = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
feed = dict(np.load(feed))
so = ort.SessionOptions()
so.intra_op_num_threads = threads
so.enable_profiling = True
so.profile_file_prefix = sys.argv[5]
from edgeai._ortcache import CPU_DISABLED_OPTIMIZERS  # the fusions edgeai's CPU sessions leave out
s = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"], disabled_optimizers=CPU_DISABLED_OPTIMIZERS)
for _ in range(runs // 5 + 3):
    s.run(None, feed)
for _ in range(runs):
    s.run(None, feed)
events = json.load(open(s.end_profiling()))
print(json.dumps([e for e in events if e.get("cat") in ("Node", "Session")]))
"""

INT8_PRODUCTS = {"DynamicQuantizeMatMul", "MatMulIntegerToFloat", "MatMulInteger", "QLinearMatMul"}
FLOAT_PRODUCTS = {"MatMul", "FusedMatMul", "Gemm"}
FUSED_ATTENTION = {"Attention", "QAttention", "MultiHeadAttention"}
# Ops that quantize an activation for the INT8 products above (a shared input is quantized once).
QUANTIZERS = {"DynamicQuantizeLinear", "QuantizeLinear"}


def classify(events: list[dict], warm: int) -> dict:
    """Per-run ms and MACs by kind, from one worker's profile (the first ``warm`` runs dropped)."""
    runs = [e for e in events if e.get("cat") == "Session" and e["name"] == "model_run"]
    timed = runs[warm:]
    start = timed[0]["ts"]
    ms = {"weight products, float": 0.0, "weight products, int8": 0.0, "attention products": 0.0, "everything else": 0.0}
    macs = {"weight products, float": 0, "weight products, int8": 0}
    ops: dict[str, float] = {}
    for e in events:
        if e.get("cat") != "Node" or not e["name"].endswith("_kernel_time") or e["ts"] < start:
            continue
        op = e["args"]["op_name"]
        # ONNX Runtime lists the inputs it was given at run time, not constant (pre-packed) weights:
        # a product with a weight shows one matrix input, attention's products show two.
        shapes = [next(iter(d.values())) for d in e["args"].get("input_type_shape", [])]
        matrices = [s for s in shapes if len(s) >= 2]
        if op in FUSED_ATTENTION:  # the fused graph: QKV products and attention in one node, not split
            kind = "attention products"
        elif op in INT8_PRODUCTS or op in QUANTIZERS:
            kind = "weight products, int8"
        elif op in FLOAT_PRODUCTS:
            kind = "weight products, float" if len(matrices) == 1 else "attention products"
        else:
            kind = "everything else"
        ms[kind] += e["dur"] / 1e3
        ops[op] = ops.get(op, 0.0) + e["dur"] / 1e3
        if (op in INT8_PRODUCTS or op in FLOAT_PRODUCTS) and len(matrices) == 1:
            out = next(iter(e["args"]["output_type_shape"][0].values()))
            macs[kind] += math.prod(matrices[0]) * out[-1]  # rows x K x N
    n = len(timed)
    return {"ms": {k: v / n for k, v in ms.items()}, "macs": {k: v / n for k, v in macs.items()},
            "ops": {k: v / n for k, v in sorted(ops.items(), key=lambda kv: -kv[1])},
            "run_ms": statistics.median(r["dur"] / 1e3 for r in timed)}


def _speed(doc: dict, kind: str) -> float:
    """G multiply-adds per second of one kind of product in one profiled run."""
    return doc["macs"][kind] / doc["ms"][kind] / 1e6 if doc["ms"][kind] and doc["macs"][kind] else 0.0


def profile(model: Path, feed: Path, threads: int, runs: int, work: Path) -> dict:
    proc = subprocess.run([sys.executable, "-c", WORKER, str(model), str(feed), str(threads), str(runs), str(work / "prof")],
                          capture_output=True, text=True, check=False, stdin=subprocess.DEVNULL)
    if proc.returncode != 0:
        sys.exit(f"profiling {model.name} failed: {(proc.stderr.strip().splitlines() or ['?'])[-1]}")
    return classify(json.loads(proc.stdout.strip().splitlines()[-1]), warm=runs // 5 + 3)


def median_doc(docs: list[dict]) -> dict:
    """The round whose run time is the median (one real run's split, not a mix of rounds)."""
    return sorted(docs, key=lambda d: d["run_ms"])[len(docs) // 2]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("package", nargs="?", default="bert")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--runs", type=int, default=100)
    ap.add_argument("--out", default=None, help="results/NAME to write (default: print only)")
    args = ap.parse_args()

    import numpy as np

    from edgeai.benchmark import bench_feed
    from edgeai.data.feeds import input_kind
    from edgeai.home import ensure_builtin
    from edgeai.package import Package

    path = Path(args.package)
    pkg = Package.open(path if path.is_dir() else ensure_builtin(args.package))
    if input_kind(pkg) != "text" or not {"fp32", "int8"} <= set(pkg.variants):
        sys.exit(f"{pkg.name}: this profile is for text packages with fp32 and int8 variants (MatMul products).")
    from edgeai.quantize.steps.dynamic import dynamic_int8

    recipe = pkg.variants["int8"].get("recipe", {})
    names = ("fp32", "int8", "all-INT8")
    got: dict[str, list[dict]] = {v: [] for v in names}
    with tempfile.TemporaryDirectory(prefix="edgeai-int8-profile-") as tmp:
        work = Path(tmp)
        np.savez(work / "feed.npz", **bench_feed(pkg, 1))
        # The fastest dynamic INT8 of this graph: every layer INT8, nothing smoothed (no Muls), the
        # package's weight range; what no accuracy budget constrains.
        files = {"fp32": pkg.variant_path("fp32"), "int8": pkg.variant_path("int8"), "all-INT8": work / "all-int8.onnx"}
        dynamic_int8(files["fp32"], files["all-INT8"], recipe.get("per_channel", True),
                     reduce_range="7-bit" in recipe.get("weights", ""))
        for r in range(args.rounds):
            for v in names if r % 2 == 0 else reversed(names):
                print(f"round {r + 1}/{args.rounds}: {v}", file=sys.stderr)
                got[v].append(profile(files[v], work / "feed.npz", args.threads, args.runs, work))
    ratios = {v: [d["run_ms"] / f["run_ms"] for f, d in zip(got["fp32"], got[v])] for v in names[1:]}
    med = {v: median_doc(got[v]) for v in names}
    # The INT8 kernels' speed against the float ones from the int8 runs alone, where its kept-float
    # layers and its INT8 ones share every run (the same neighbours, the same minute); per round,
    # the median taken. The share of the weight products is taken of the fp32 kernels' sum: the
    # profiler's own cost between nodes would shrink it.
    gain = [_speed(d, "weight products, int8") / _speed(d, "weight products, float") for d in got["int8"]
            if _speed(d, "weight products, float") and _speed(d, "weight products, int8")]
    share = statistics.median(d["ms"]["weight products, float"] / sum(d["ms"].values()) for d in got["fp32"])
    lines = [f"# Where {pkg.name}'s fp32 and int8 runs spend their time (ONNX Runtime's profiler)", "",
             _report.machine_line(args.threads),
             f"Command: `python benchmarks/int8_profile.py {args.package} --rounds {args.rounds} --threads {args.threads}`; "
             f"input: {pkg.name}'s typical 128-token text, batch 1; each file profiled over {args.runs} runs in a fresh "
             f"process, {args.rounds} rounds alternating; the split shown is each file's median round.  ",
             f"int8: the package's ({recipe.get('weights', '?')} weights, smoothing alpha "
             f"{(recipe.get('smoothing') or {}).get('alpha')}, {len(recipe.get('float_nodes') or [])} layers kept float). "
             "all-INT8: the fp32 graph with every layer dynamic INT8, nothing smoothed, the same weight range: "
             "the fastest dynamic INT8 of this graph, whatever its accuracy.", "",
             "| ms per run | " + " | ".join(names) + " |", "|---|---|---|---|"]
    for k in med["fp32"]["ms"]:
        lines.append(f"| {k} | " + " | ".join(f"{med[v]['ms'][k]:.2f}" for v in names) + " |")
    lines.append("| **run (median round)** | " + " | ".join(f"**{med[v]['run_ms']:.2f}**" for v in names) + " |")
    lines.append("| run / fp32, per round: median (best) | 1 | "
                 + " | ".join(f"**{statistics.median(ratios[v]):.2f}** ({min(ratios[v]):.2f})" for v in names[1:]) + " |")
    lines += ["", "| speed of the weight products (G multiply-adds/s) | " + " | ".join(names) + " |", "|---|---|---|---|"]
    for k in ("weight products, float", "weight products, int8"):
        lines.append(f"| {k} | " + " | ".join(f"{_speed(med[v], k):.1f}" if _speed(med[v], k) else "-" for v in names) + " |")
    if gain:
        r = statistics.median(gain)
        lines += ["", f"INT8 products here run {r:.2f}x the multiply-adds per second of float ones (the int8 rounds' median, "
                  f"{min(gain):.2f}-{max(gain):.2f}, its kept-float layers against its INT8 ones in the same runs; "
                  f"quantizing the activations included). Weight products take {share:.0%} of the fp32 kernels' time; "
                  f"with every one at the INT8 speed and the rest as it is, fp32 would take about "
                  f"**{1 - share * (1 - 1 / r):.2f}x** its time: roughly the most dynamic INT8 gives on this CPU."]
    lines += ["", "Op types, ms per run (median round):", "",
              "| op | " + " | ".join(names) + " |", "|---|---|---|---|"]
    for op in dict.fromkeys(o for v in names for o in med[v]["ops"]):
        cells = [med[v]["ops"].get(op) for v in names]
        if max(c or 0 for c in cells) >= 0.05:
            lines.append(f"| {op} | " + " | ".join(f"{c:.2f}" if c else "-" for c in cells) + " |")
    text = "\n".join(lines) + "\n"
    if args.out:
        _report.write(text, str(HERE / "results" / args.out))
    else:
        print(text)


if __name__ == "__main__":
    main()
