"""EfficientNet-Lite0 on this CPU: edgeai vs PyTorch eager vs plain ONNX Runtime (issue: foundation).

    python benchmarks/cnn.py [--package DIR] [--rounds 5] [--threads 2] [--out benchmarks/results/cnn.md]

Each engine runs in its own fresh process (FACTS.md: on 2 cores, PyTorch's and ONNX Runtime's
spinning thread pools distort each other in one process), alternating engine order round by
round; each process warms up, then times ``--runs`` calls at batch 1 on the same preprocessed
photo. The table reports the median over rounds of each process's median, and ratios taken
within this one run. Absolute times on a shared machine mean little; the ratios are the result.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
import _report  # noqa: E402  (benchmarks/ is a folder of scripts, not a package)
PHOTO = ROOT / "samples" / "cat.jpg"


# -- workers (each runs alone in a fresh process) ----------------------------------------------
def _feed(pkg: str):
    import edgeai

    return edgeai.load(pkg, variant="fp32", provider="cpu").preprocess([str(PHOTO)])


def worker(engine: str, pkg: str, threads: int, runs: int) -> dict:
    if engine == "torch":
        import torch

        from edgeai.export import cnn

        torch.set_num_threads(threads)
        model = cnn.build_module()
        x = torch.from_numpy(_feed(pkg)["pixel_values"])
        with torch.inference_mode():
            return _report.timeit(lambda: model(x), runs, warmup=10)
    import onnxruntime as ort

    import edgeai
    from edgeai.package import Package

    feed = _feed(pkg)
    kind, _, variant = engine.partition(":")
    if kind == "ort":  # plain ONNX Runtime on the exported fp32 file: default options, N threads
        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        session = ort.InferenceSession(str(Package.open(pkg).variant_path(variant)), so, providers=["CPUExecutionProvider"])
        return _report.timeit(lambda: session.run(None, feed), runs, warmup=10)
    pipe = edgeai.load(pkg, variant=variant or "auto", provider="cpu", threads=threads)
    result = {"variant": pipe.variant}
    if kind == "edgeai":
        result.update(_report.timeit(lambda: pipe.run(feed), runs, warmup=10))
    elif kind == "raw":  # the same session edgeai built, called directly
        session = pipe.session._session
        result.update(_report.timeit(lambda: session.run(None, feed), runs, warmup=10))
    elif kind == "predict":
        path = str(PHOTO)
        result["predict"] = _report.timeit(lambda: pipe.predict(path), runs, warmup=10)
        result["preprocess"] = _report.timeit(lambda: pipe.preprocess([path]), runs, warmup=10)
        result["run"] = _report.timeit(lambda: pipe.run(feed), runs, warmup=10)
        result.update(p50_ms=result["predict"]["p50_ms"])
    return result


def torch_classify(photo: str) -> None:
    """The same classification as `edgeai run photo`, done through PyTorch (for process wall time)."""
    import numpy as np
    import torch

    from edgeai.export import cnn
    from edgeai.preprocess import ImagePreprocessor

    model = cnn.build_module()
    x = torch.from_numpy(ImagePreprocessor(cnn.PREPROCESS).batch([photo]))
    with torch.inference_mode():
        probs = torch.softmax(model(x), -1)[0].numpy()
    labels = cnn.labels_text().splitlines()
    for i in np.argsort(-probs)[:5]:
        print(f"{labels[i]:30s} {probs[i]:.3f}")


# -- orchestration -----------------------------------------------------------------------------
def _spawn(engine: str, pkg: str, threads: int, runs: int) -> dict:
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE"}
    cmd = [sys.executable, __file__, "--worker", engine, "--package", pkg, "--threads", str(threads), "--runs", str(runs)]
    out = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if out.returncode != 0:
        raise SystemExit(f"worker {engine} failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def _wall(cmd: list[str], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        subprocess.run(cmd, capture_output=True, check=True)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--package", default=None, help="EfficientNet-Lite0 package [default: the built-in one]")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--runs", type=int, default=60)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "cnn.md"))
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--torch-classify", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.torch_classify:
        return torch_classify(args.torch_classify)
    if args.package is None:
        from edgeai.home import ensure_builtin

        args.package = str(ensure_builtin("efficientnet-lite0", progress=lambda m: print("building:", m, file=sys.stderr)))
    if args.worker:
        print(json.dumps(worker(args.worker, args.package, args.threads, args.runs)))
        return

    engines = ["torch", "ort:fp32", "edgeai:fp32", "edgeai:optimized", "edgeai:int8", "edgeai:", "raw:", "predict:"]
    figures: dict[str, list[dict]] = {e: [] for e in engines}
    for r in range(args.rounds):
        for engine in engines if r % 2 == 0 else reversed(engines):
            figures[engine].append(_spawn(engine, args.package, args.threads, args.runs))
            print(f"round {r + 1}/{args.rounds} {engine:18s} {figures[engine][-1]['p50_ms']:.2f} ms", file=sys.stderr)
    med = {e: statistics.median(f["p50_ms"] for f in figs) for e, figs in figures.items()}
    default_variant = figures["edgeai:"][0]["variant"]
    pre = statistics.median(f["preprocess"]["p50_ms"] for f in figures["predict:"])
    run = statistics.median(f["run"]["p50_ms"] for f in figures["predict:"])

    edgeai_exe = str(Path(sys.executable).with_name("edgeai"))
    wall_edgeai = _wall([edgeai_exe, "run", str(PHOTO), "--model", args.package], args.rounds)
    wall_torch = _wall([sys.executable, __file__, "--torch-classify", str(PHOTO)], args.rounds)

    t = med["torch"]
    rows = [
        ("PyTorch eager fp32", med["torch"], 1.0, ""),
        ("plain ONNX Runtime fp32 (default options)", med["ort:fp32"], med["ort:fp32"] / t, ""),
        ("edgeai fp32", med["edgeai:fp32"], med["edgeai:fp32"] / t, ""),
        ("edgeai optimized", med["edgeai:optimized"], med["edgeai:optimized"] / t, ""),
        ("edgeai int8 (static QDQ)", med["edgeai:int8"], med["edgeai:int8"] / t, ""),
        (f"edgeai default (auto -> {default_variant})", med["edgeai:"], med["edgeai:"] / t, "target <= 0.20"),
    ]
    checks = [
        ("edgeai default / PyTorch eager", med["edgeai:"] / t, "<= 0.20"),
        ("edgeai int8 / edgeai fp32", med["edgeai:int8"] / med["edgeai:fp32"], "<= 0.90"),
        ("Pipeline.run / raw session.run (same variant)", med["edgeai:"] / med["raw:"], "<= 1.05"),
        ("predict(photo) / (preprocess + run)", med["predict:"] / (pre + run), "<= 1.10"),
        ("process wall: `edgeai run photo` / PyTorch script", wall_edgeai / wall_torch, "report"),
    ]
    lines = [
        "# EfficientNet-Lite0 on CPU (batch 1, 224x224)",
        "",
        f"Command: `python benchmarks/cnn.py --rounds {args.rounds} --runs {args.runs} --threads {args.threads}`  ",
        _report.machine_line(args.threads),
        f"Date: {time.strftime('%Y-%m-%d')}. Each engine in its own process, order alternating, "
        f"{args.rounds} rounds x {args.runs} timed calls; medians.",
        "",
        "| engine | p50 ms | / PyTorch eager | |",
        "|---|---|---|---|",
        *[f"| {name} | {ms:.2f} | {ratio:.2f} | {note} |" for name, ms, ratio, note in rows],
        "",
        "| ratio | measured | target |",
        "|---|---|---|",
        *[f"| {name} | {value:.3f} | {target} |" for name, value, target in checks],
        "",
        f"predict(photo) {med['predict:']:.2f} ms = preprocessing {pre:.2f} ms + run {run:.2f} ms + the rest.  ",
        f"Process wall time, median of {args.rounds}: `edgeai run samples/cat.jpg` (package built) {wall_edgeai:.2f} s; "
        f"the same classification through PyTorch (import torch, load weights, preprocess, forward) {wall_torch:.2f} s.",
        "",
    ]
    _report.write("\n".join(lines), args.out)



if __name__ == "__main__":
    main()
