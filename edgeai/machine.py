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


def machine_key(provider: str, device_id: int = 0) -> str:
    """The key latencies are recorded under: the CPU kind, plus the GPU's name for GPU providers
    (an fp16 engine's speed is a property of the GPU, not of the host CPU)."""
    if provider in ("CUDAExecutionProvider", "TensorrtExecutionProvider"):
        from .gpu import gpu_name

        return f"{machine_id()}{_GPU_SEP}{gpu_name(device_id) or 'unknown GPU'}"
    return machine_id()


_GPU_SEP = " + "


def is_this_machine(key: str | None) -> bool:
    """A recorded figure from this kind of machine (its CPU, with or without a GPU part)."""
    here = machine_id()
    return key == here or bool(key and key.startswith(here + _GPU_SEP))


def describe_machine(key: str | None) -> str:
    """``"this one"`` (``"this one + NVIDIA L4"``) for this kind of machine, else the key itself."""
    if not is_this_machine(key):
        return key or "?"
    return "this one" + key[len(machine_id()):]
