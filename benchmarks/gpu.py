"""MiniLM and EfficientNet-Lite0 on one NVIDIA GPU against PyTorch eager fp32 on the same GPU.

    python benchmarks/gpu.py [--rounds 3] [--device-id 0] [--out benchmarks/results/gpu-bench.md]

Needs onnxruntime-gpu with working CUDA (``edgeai doctor`` says), and torch with CUDA for the
reference. For each model it copies the built-in package, adds the ``fp16`` variant
(``quantize(precision="fp16")``) and calls ``edgeai.bench`` on CUDA fp32, CUDA fp16 and (when
TensorRT starts) TensorRT fp32 and fp16, batch 1 and 8, against PyTorch eager fp32 on the GPU: each case
in its own process, rounds alternating. On CUDA every call goes through IO binding (edgeai's
default there). The target of the issue: MiniLM at batch 1 >= 3x faster than PyTorch.
Without a GPU it says why and exits 1.
"""

from __future__ import annotations

import argparse
import datetime
import shutil
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import _report  # noqa: E402

MODELS = [("bert", "all-MiniLM-L6-v2"), ("efficientnet-lite0", "EfficientNet-Lite0")]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--device-id", type=int, default=0)
    ap.add_argument("--out", default=str(HERE / "results" / "gpu-bench.md"))
    args = ap.parse_args()

    from edgeai import bench, gpu, providers
    from edgeai.home import ensure_builtin
    from edgeai.quantize import quantize

    reason = providers.unavailable_reason(providers.CUDA)
    if reason is not None:
        print(f"no GPU benchmark here: cuda cannot start ({reason}); run `edgeai doctor`.", file=sys.stderr)
        return 1
    provs = [providers.CUDA]
    trt = providers.unavailable_reason(providers.TENSORRT)
    if trt is None:
        provs.append(providers.TENSORRT)
    name = gpu.gpu_name(args.device_id) or "unknown GPU"
    lines = [f"# MiniLM and EfficientNet-Lite0 on {name} ({datetime.date.today()})", "",
             f"Command: `python benchmarks/gpu.py --rounds {args.rounds}`  ",
             _report.machine_line(0).replace("0 threads", "default threads"), "",
             "Each figure: p50 latency in ms (x PyTorch eager fp32 on the same GPU = edgeai p50 / PyTorch p50; "
             "lower is faster). CUDA runs through IO binding.", ""]
    if trt is not None:
        lines += [f"TensorRT: not measured ({trt}).", ""]
    with tempfile.TemporaryDirectory(prefix="edgeai-gpu-bench-") as work:
        for builtin, label in MODELS:
            pkg = Path(work) / builtin
            shutil.copytree(ensure_builtin(builtin), pkg)
            quantize(pkg, precision="fp16", measure_latency=False,
                     progress=lambda m: print(f"{builtin}: {m}", file=sys.stderr))
            doc = bench(pkg, variants="fp32,fp16", providers=",".join(provs), batches=(1, 8), rounds=args.rounds,
                        against="torch", device_id=args.device_id, min_time=1.0,
                        on_step=lambda d, t, case: print(f"{builtin}: {d}/{t} {case}", file=sys.stderr))
            lines += [f"## {label} ({doc['inputs']})", "", "| engine | batch 1 | batch 8 |", "|---|---|---|"]
            for engine in ["pytorch", *[(p, v) for p in provs for v in ("fp32", "fp16")]]:
                cells = []
                for b in (1, 8):
                    row = next(r for r in doc["results"] if r["batch"] == b and (
                        r["engine"] == "pytorch" if engine == "pytorch"
                        else (r["provider"], r["variant"]) == engine))
                    ratio = "" if row["vs_torch"] is None else f" ({row['vs_torch']:.2f}x)"
                    placed = providers.placement_line(row.get("placement") or {}, row["provider"])
                    cells.append(f"{row['p50_ms']:.3f}{ratio}" + (f"; {placed}" if placed else ""))
                title = "PyTorch eager fp32" if engine == "pytorch" else f"{providers.short_name(engine[0])} {engine[1]}"
                lines.append(f"| {title} | {' | '.join(cells)} |")
            lines.append("")
    _report.write("\n".join(lines), args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
