"""The sentiment LSTM on this CPU: edgeai vs PyTorch eager vs plain ONNX Runtime (issue: LSTM).

    python benchmarks/lstm.py [--package DIR] [--rounds 5] [--threads 2]

Batch 1, 100 tokens. The PyTorch engine is the trained model the package carries
(pytorch_model.safetensors). Each engine in its own fresh process, order alternating round by
round; medians over rounds of each process's median; ratios within this one run.
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

TOKENS = 100


def worker(engine: str, pkg_dir: str, feed_file: str, threads: int, runs: int) -> dict:
    import numpy as np

    from edgeai.package import Package

    feed = dict(np.load(feed_file))
    pkg = Package.open(pkg_dir)
    if engine == "torch":
        import torch

        from edgeai.export import lstm

        torch.set_num_threads(threads)
        model = lstm.load_trained(pkg)
        args = [torch.from_numpy(feed[k]) for k in ("input_ids", "attention_mask")]
        with torch.inference_mode():
            return _report.timeit(lambda: model(*args), runs)
    import onnxruntime as ort

    import edgeai

    kind, _, variant = engine.partition(":")
    if kind == "ort":
        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        session = ort.InferenceSession(str(pkg.variant_path("fp32")), so, providers=["CPUExecutionProvider"])
        return _report.timeit(lambda: session.run(None, feed), runs)
    pipe = edgeai.load(pkg_dir, variant=variant or "auto", provider="cpu", threads=threads)
    return {"variant": pipe.variant, **_report.timeit(lambda: pipe.run(feed), runs)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--package", default=None, help="sentiment LSTM package [default: the built-in lstm]")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--runs", type=int, default=200)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "lstm.md"))
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--feed", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.package, args.feed, args.threads, args.runs)))
        return
    import numpy as np

    from edgeai.package import Package
    from edgeai.quantize import text_feeds
    from edgeai.data.texts import HELD_OUT

    if args.package is None:
        from edgeai.home import ensure_builtin

        args.package = str(ensure_builtin("lstm", progress=lambda m: print("building:", m, file=sys.stderr)))
    pkg = Package.open(args.package)
    feed = text_feeds(pkg, [max(HELD_OUT, key=len)], max_length=TOKENS)[0]
    assert feed["input_ids"].shape == (1, TOKENS), feed["input_ids"].shape
    feed_file = Path(tempfile.mkdtemp(prefix="edgeai-bench-")) / "feed.npz"
    np.savez(feed_file, **feed)
    engines = ["torch", "ort:fp32", "edgeai:fp32", "edgeai:optimized", "edgeai:int8", "edgeai:"]
    figures: dict[str, list[dict]] = {e: [] for e in engines}
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE"}
    for r in range(args.rounds):
        for engine in engines if r % 2 == 0 else list(reversed(engines)):
            cmd = [sys.executable, __file__, "--worker", engine, "--package", args.package, "--feed", str(feed_file),
                   "--threads", str(args.threads), "--runs", str(args.runs)]
            out = subprocess.run(cmd, capture_output=True, text=True, env=env)
            if out.returncode != 0:
                raise SystemExit(f"worker {engine} failed:\n{out.stderr[-2000:]}")
            figures[engine].append(json.loads(out.stdout.strip().splitlines()[-1]))
            print(f"round {r + 1}/{args.rounds} {engine:18s} {figures[engine][-1]['p50_ms']:.3f} ms", file=sys.stderr)
    med = {e: statistics.median(f["p50_ms"] for f in figs) for e, figs in figures.items()}
    t = med["torch"]
    names = {"torch": "PyTorch eager fp32 (the trained model)", "ort:fp32": "plain ONNX Runtime fp32", "edgeai:fp32": "edgeai fp32",
             "edgeai:optimized": "edgeai optimized", "edgeai:int8": "edgeai int8 (DynamicQuantizeLSTM)",
             "edgeai:": f"edgeai default (auto -> {figures['edgeai:'][0]['variant']})"}
    arch = pkg.manifest["provenance"]["architecture"]
    lines = [
        f"# Sentiment LSTM on CPU (batch 1, {TOKENS} tokens)",
        "",
        f"Model: {arch['num_layers']}-layer LSTM, {arch['hidden_size']} units, {arch['embedding']}-d embeddings, "
        f"{arch['vocab_size']} tokens (the package `edgeai export lstm` builds).  ",
        f"Command: `python benchmarks/lstm.py --rounds {args.rounds} --runs {args.runs} --threads {args.threads}`  ",
        _report.machine_line(args.threads),
        f"Date: {time.strftime('%Y-%m-%d')}. Each engine in its own process, order alternating, "
        f"{args.rounds} rounds x {args.runs} timed calls; medians.",
        "",
        "| engine | p50 ms | / PyTorch eager |",
        "|---|---|---|",
        *[f"| {names[e]} | {med[e]:.3f} | {med[e] / t:.2f} |" for e in engines],
        "",
        "| ratio | measured | target |",
        "|---|---|---|",
        f"| edgeai default / PyTorch eager | {med['edgeai:'] / t:.3f} | <= 0.25 |",
        f"| edgeai int8 / edgeai fp32 | {med['edgeai:int8'] / med['edgeai:fp32']:.3f} | report |",
        "",
    ]
    _report.write("\n".join(lines), args.out)


if __name__ == "__main__":
    main()
