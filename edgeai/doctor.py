"""``edgeai doctor``: what this machine can run, checked rather than assumed.

ONNX Runtime lists the providers it was built with, not those that can start (FACTS.md: the GPU
build lists TensorRT and CUDA on a machine without CUDA and then quietly runs on CPU). So the
doctor creates a one-node session on each provider and says whether that provider really ran
it, which libraries the dynamic loader finds, and which GPU and driver ``nvidia-smi`` reports.
"""

from __future__ import annotations

import ctypes
import os
import platform
import shutil
import subprocess
import sys
import time
from importlib.metadata import PackageNotFoundError, version
from typing import Any

import numpy as np
import onnxruntime as ort

from . import __version__, providers
from .machine import machine_id

# Sonames ONNX Runtime's CUDA 13 / cuDNN 9 / TensorRT 10 providers load (Linux; DLLs on Windows).
LIBRARIES = {
    "CUDA runtime": ("libcudart.so.13", "cudart64_13.dll"),
    "cuBLAS": ("libcublas.so.13", "cublas64_13.dll"),
    "cuBLASLt": ("libcublasLt.so.13", "cublasLt64_13.dll"),
    "cuFFT": ("libcufft.so.12", "cufft64_12.dll"),
    "cuDNN": ("libcudnn.so.9", "cudnn64_9.dll"),
    "TensorRT": ("libnvinfer.so.10", "nvinfer_10.dll"),
    "TensorRT ONNX parser": ("libnvonnxparser.so.10", "nvonnxparser_10.dll"),
}


def _tiny_model() -> bytes:
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Add", ["x", "x"], ["y"])], "doctor",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 2])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 2])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model.SerializeToString()


def try_provider(name: str, model: bytes) -> dict[str, Any]:
    """Create a session on ``name`` alone and run it once: does it really start?"""
    entry: dict[str, Any] = {"name": name, "short": providers.short_name(name), "starts": False, "reason": None}
    reason = providers.unavailable_reason(name)
    if reason is not None:
        entry["reason"] = reason
        return entry
    so = ort.SessionOptions()
    so.log_severity_level = 3
    t = time.perf_counter()
    try:
        session = ort.InferenceSession(model, so, providers=[(name, providers.provider_options(name))])
        used = session.get_providers()[0]
        if used != name:
            entry["reason"] = f"ONNX Runtime fell back to {providers.short_name(used)} at session creation"
            return entry
        y = session.run(None, {"x": np.ones((2, 2), np.float32)})[0]
        if not np.allclose(y, 2.0):
            entry["reason"] = "the test session ran but gave a wrong answer"
            return entry
    except Exception as e:  # ORT raises bare RuntimeError/Fail subclasses for providers that fail
        from .session import ort_detail  # the one cleaner of ONNX Runtime's messages (an empty one included)

        entry["reason"] = f"session creation failed: {ort_detail(e).splitlines()[0][:200]}"
        return entry
    entry.update(starts=True, seconds=round(time.perf_counter() - t, 3))
    return entry


def find_libraries() -> list[dict[str, Any]]:
    """Which CUDA/cuDNN/TensorRT libraries the dynamic loader finds (after ONNX Runtime's own
    ``preload_dlls`` of pip-installed ones, as edgeai does before creating a GPU session)."""
    providers._preload_cuda_libraries()
    found = []
    for what, names in LIBRARIES.items():
        name = names[1] if sys.platform == "win32" else names[0]
        try:
            ctypes.CDLL(name)
            found.append({"library": what, "file": name, "found": True})
        except OSError:
            found.append({"library": what, "file": name, "found": False})
    return found


def gpus() -> tuple[list[dict[str, str]], str | None]:
    """GPUs and driver as ``nvidia-smi`` reports them, or why there are none to show."""
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return [], "nvidia-smi not found (no NVIDIA driver installed)"
    try:
        out = subprocess.run([exe, "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=20, check=False)
    except (OSError, subprocess.TimeoutExpired) as e:
        return [], f"nvidia-smi failed: {e}"
    if out.returncode != 0:
        return [], f"nvidia-smi failed: {(out.stderr or out.stdout).strip().splitlines()[0][:200] if (out.stderr or out.stdout).strip() else out.returncode}"
    rows = []
    for line in out.stdout.strip().splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) >= 3:
            rows.append({"name": parts[0], "driver": parts[1], "memory": parts[2]})
    return rows, None if rows else "nvidia-smi lists no GPU"


def diagnose() -> dict[str, Any]:
    package = next((d for d in ("onnxruntime-gpu", "onnxruntime") if _installed(d)), "onnxruntime")
    model = _tiny_model()
    compiled = ort.get_available_providers()
    checked = [try_provider(p, model) for p in providers.AUTO_ORDER if p in compiled or p == providers.CPU]
    auto = next((p["name"] for p in checked if p["starts"]), providers.CPU)
    gpu_rows, gpu_note = gpus()
    return {
        "edgeai": __version__,
        "python": platform.python_version(),
        "platform": f"{platform.system()} {platform.machine()}",
        "machine": machine_id(),
        "onnxruntime": {"version": ort.__version__, "package": package, "device": ort.get_device(),
                        "compiled_in": compiled},
        "providers": checked,
        "auto": auto,
        "libraries": find_libraries() if any(p != providers.CPU for p in compiled) else [],
        "gpus": gpu_rows,
        "gpu_note": gpu_note,
    }


def _installed(dist: str) -> bool:
    try:
        version(dist)
        return True
    except PackageNotFoundError:
        return False


if __name__ == "__main__":  # pragma: no cover
    import json

    print(json.dumps(diagnose(), indent=2), file=sys.stdout)
    os._exit(0)
