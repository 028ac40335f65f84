"""What every benchmark script shares: the machine line and the result file (timing is edgeai.bench)."""

from __future__ import annotations

import os
import platform
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
