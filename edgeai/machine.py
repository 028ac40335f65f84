"""A short description of "this kind of machine", the key under which latencies are recorded.

Variant choice compares latencies measured on the same kind of machine only: an int8 model that
wins on a CPU with VNNI can lose on one without it (measured here: AVX2, no VNNI).
"""

from __future__ import annotations

import os
import platform
from functools import lru_cache

_FLAGS = ("avx512_vnni", "avx_vnni", "avx512f", "amx_int8", "avx2", "asimddp", "i8mm")


@lru_cache(maxsize=1)
def machine_id() -> str:
    model, flags = platform.processor() or platform.machine(), set()
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                key, _, value = line.partition(":")
                key = key.strip()
                if key in ("model name", "Hardware") and model in ("", platform.machine(), platform.processor()):
                    model = value.strip()
                elif key in ("flags", "Features"):
                    flags = set(value.split())
                    break
    except OSError:
        pass
    best = [f for f in _FLAGS if f in flags][:2]
    cores = os.cpu_count() or 0
    return " ".join([platform.machine(), model, *best, f"{cores}cpu"]).strip()
