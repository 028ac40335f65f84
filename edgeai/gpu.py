"""What a cached TensorRT engine depends on, and where it lives.

A TensorRT engine is compiled for one model, one GPU and one TensorRT/ONNX Runtime build; run on
anything else it fails or, worse, runs wrong. ONNX Runtime names its cache files after the graph
and the GPU's compute capability only, so two models of one name, or an upgraded ONNX Runtime,
could pick up a stale engine. edgeai therefore gives each (model sha256, ONNX Runtime version,
TensorRT version, GPU name) its own cache directory under ``$EDGEAI_HOME/tensorrt/``.

The GPU is named through the CUDA driver API (``cuDeviceGetName`` in libcuda, which every NVIDIA
driver installs), with ``nvidia-smi`` as a second source: no CUDA toolkit or torch needed.
"""

from __future__ import annotations

import ctypes
import os
import re
import shutil
import subprocess
import sys
from functools import lru_cache
from pathlib import Path

import onnxruntime as ort

ENGINE_SUFFIXES = (".engine",)


@lru_cache(maxsize=None)
def gpu_name(device_id: int = 0) -> str | None:
    """The GPU's marketing name (e.g. ``NVIDIA H100 80GB HBM3``), or None without a driver."""
    lib = "nvcuda.dll" if sys.platform == "win32" else "libcuda.so.1"
    try:
        cuda = ctypes.CDLL(lib)
        device = ctypes.c_int()
        name = ctypes.create_string_buffer(256)
        if cuda.cuInit(0) == 0 and cuda.cuDeviceGet(ctypes.byref(device), int(device_id)) == 0:
            if cuda.cuDeviceGetName(name, len(name), device) == 0 and name.value:
                return name.value.decode(errors="replace").strip()
    except (OSError, AttributeError):
        pass
    exe = shutil.which("nvidia-smi")
    # nvidia-smi numbers GPUs in PCI order and ignores CUDA_VISIBLE_DEVICES; CUDA's numbering
    # differs on mixed machines, so it is asked only where the two must agree.
    if exe and not os.environ.get("CUDA_VISIBLE_DEVICES"):
        try:
            out = subprocess.run([exe, "--query-gpu=name", "--format=csv,noheader", "-i", str(device_id)],
                                 capture_output=True, text=True, timeout=20)
            if out.returncode == 0 and out.stdout.strip():
                return out.stdout.strip().splitlines()[0].strip()
        except (OSError, subprocess.SubprocessError):
            pass
    return None


@lru_cache(maxsize=None)
def tensorrt_version() -> str | None:
    """The TensorRT library the loader finds (``getInferLibVersion``), e.g. ``10.13.3``."""
    names = ["libnvinfer.so.10", "libnvinfer.so"] if sys.platform != "win32" else ["nvinfer_10.dll", "nvinfer.dll"]
    for name in names:
        try:
            v = int(ctypes.CDLL(name).getInferLibVersion())
        except (OSError, AttributeError):
            continue
        # 10.x encodes major*10000 + minor*100 + patch; 8.x used major*1000 + minor*100 + patch.
        major, rest = (v // 10000, v % 10000) if v >= 100000 else (v // 1000, v % 1000)
        return f"{major}.{rest // 100}.{rest % 100}"
    return None


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.]+", "-", text).strip("-").lower() or "unknown"


def engine_key(model_sha256: str, device_id: int = 0) -> str:
    """One directory name per (model, ONNX Runtime, TensorRT, GPU): nothing stale is ever reused."""
    parts = [model_sha256[:16], f"ort{ort.__version__}", f"trt{tensorrt_version() or 'unknown'}",
             _slug(gpu_name(device_id) or "unknown-gpu")]
    return "-".join(_slug(p) for p in parts)


def engine_cache_dir(model_sha256: str, device_id: int = 0) -> Path:
    from .home import cache_dir

    return cache_dir() / "tensorrt" / engine_key(model_sha256, device_id)


def has_engine(directory: Path) -> bool:
    return directory.is_dir() and any(p.suffix in ENGINE_SUFFIXES for p in directory.iterdir())
