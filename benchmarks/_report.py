"""What every benchmark script shares: timing one engine, the machine line, the result file."""

from __future__ import annotations

import os
import platform
import time
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path


def machine_line(threads: int) -> str:
    from edgeai.machine import machine_id

    found = []
    for dist in ("onnxruntime-gpu", "onnxruntime", "torch", "transformers"):
        try:
            found.append(f"{dist} {version(dist)}")
        except PackageNotFoundError:
            pass
    return f"Machine: {machine_id()}, {os.cpu_count()} cores, {threads} threads; Python {platform.python_version()}; {', '.join(found)}  "


def write(text: str, out: str) -> None:
    print(text)
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text(text)


def timeit(fn, runs: int, warmup: int = 5) -> dict:
    """Median and p90 of ``runs`` timed calls after ``max(warmup, runs // 5)`` untimed ones."""
    import numpy as np

    for _ in range(max(warmup, runs // 5)):
        fn()
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1e3)
    return {"p50_ms": float(np.median(times)), "p90_ms": float(np.percentile(times, 90))}
