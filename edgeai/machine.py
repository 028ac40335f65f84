"""A short description of "this kind of machine", the key under which latencies are recorded.

Variant choice compares latencies measured on the same kind of machine only: an int8 model that
wins on a CPU with VNNI can lose on one without it (measured here: AVX2, no VNNI).
"""

from __future__ import annotations

import os
import platform
from functools import lru_cache
from pathlib import Path

# The CPU flags that change which INT8 (and fp32) kernels ONNX Runtime runs: VNNI accumulates
# u8 x s8 products in int32 where AVX2 alone saturates int16 pairs (quantize/saturation.py), AMX
# tiles, AVX-512; asimddp / i8mm on ARM. Two CPUs under one "AMD EPYC avx2" label measured INT8
# 1.2-1.7x and 1.0x of fp32 (FACTS.md): the family/model numbers tell their generations apart.
_FLAGS = ("amx_int8", "avx512_vnni", "avx_vnni", "avx512f", "avx2", "asimddp", "i8mm")


@lru_cache(maxsize=1)
def machine_id() -> str:
    """``x86_64 AMD EPYC fam25/m17 avx512_vnni avx512f avx2 2cpu``: the CPU's name, its generation
    (family/model) and its INT8-relevant flags, and the cores this process may use."""
    info = _cpuinfo()
    model = info.get("model name") or info.get("Hardware") or platform.processor() or platform.machine()
    generation = f"fam{info['cpu family']}/m{info['model']}" if "cpu family" in info and "model" in info else ""
    flags = set((info.get("flags") or info.get("Features") or "").split())
    return " ".join(p for p in [platform.machine(), model, generation, *[f for f in _FLAGS if f in flags], f"{usable_cpus()}cpu"] if p)


def int8_saturates() -> bool:
    """Whether this CPU's u8 x s8 INT8 kernel adds product pairs into a saturating int16: x86 without
    VNNI or AMX (AVX2, AVX-512F alone), where ONNX Runtime documents 7-bit weights as the remedy."""
    flags = set(machine_id().split())
    return platform.machine().lower() in ("x86_64", "amd64") and not flags & {"amx_int8", "avx512_vnni", "avx_vnni"}


def available_bytes() -> int | None:
    """Memory this process can still have (Linux: MemAvailable, or less where its container's
    cgroup v2 limit leaves less: a container is killed at its limit, whatever the host has), or None."""
    found = []
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            found += [int(line.split()[1]) * 1024 for line in f if line.startswith("MemAvailable:")]
        limit, used = (Path("/sys/fs/cgroup", name).read_text().strip() for name in ("memory.max", "memory.current"))
        found += [int(limit) - int(used)] if limit != "max" else []
    except (OSError, ValueError):
        pass
    return min(found) if found else None


def usable_cpus() -> int:
    """The CPUs this process may run on (its affinity, as taskset or a container sets it)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def _cpuinfo() -> dict[str, str]:
    """The first processor's fields of /proc/cpuinfo (empty elsewhere)."""
    return next(iter(_cpu_blocks()), {})


def _cpu_blocks() -> list[dict[str, str]]:
    """Each processor's fields of /proc/cpuinfo, in order (none elsewhere)."""
    blocks: list[dict[str, str]] = [{}]
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.strip():
                    key, _, value = line.partition(":")
                    blocks[-1].setdefault(key.strip(), value.strip())
                elif blocks[-1]:  # a blank line ends a processor's fields
                    blocks.append({})
    except OSError:
        pass
    return [b for b in blocks if b]


@lru_cache(maxsize=1)
def default_threads() -> int:
    """How many threads ONNX Runtime's default (``intra_op_num_threads=0``) runs: one per physical
    core of the host, whatever CPUs this process is pinned to (measured: ORT 1.31 under
    ``taskset -c 0`` starts two on a 2-core host). A figure timed on the default is matched as
    this many, not one per logical CPU, which a hyperthreaded host has twice as many of. Physical
    cores are the distinct (package, core) pairs of /proc/cpuinfo; elsewhere, the CPU count."""
    cores = {(b.get("physical id", "0"), b["core id"]) for b in _cpu_blocks() if "core id" in b}
    return len(cores) or os.cpu_count() or 1


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
