"""Execution-provider choice: TensorRT, then CUDA, then CPU, keeping the first that really works.

ONNX Runtime lists providers it was built with, not providers that can start: the GPU build on a
machine without CUDA lists TensorRT and CUDA, prints red library errors, and quietly creates the
session on CPU. So edgeai (1) asks the dynamic loader whether the provider's own library and its
CUDA/TensorRT dependencies load, which names the missing library in one line, and (2) compares
``session.get_providers()`` with what it asked for after creating the session.
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib.util
import logging
import os
import re
import sys
import tempfile
import threading
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import onnxruntime as ort

from .errors import ProviderError

log = logging.getLogger("edgeai")

CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"
TENSORRT = "TensorrtExecutionProvider"
AUTO_ORDER = (TENSORRT, CUDA, CPU)
ALIASES = {
    "cpu": CPU,
    "cuda": CUDA,
    "gpu": CUDA,
    "tensorrt": TENSORRT,
    "trt": TENSORRT,
}
SHORT = {CPU: "cpu", CUDA: "cuda", TENSORRT: "tensorrt"}
_PROVIDER_LIBS = {CUDA: "onnxruntime_providers_cuda", TENSORRT: "onnxruntime_providers_tensorrt"}

# ONNX Runtime's own log would print red lines for every provider that cannot load; edgeai
# reports those in one sentence of its own instead. 3 = errors only.
ort.set_default_logger_severity(3)


def canonical(name: str) -> str:
    """``"cuda"`` -> ``"CUDAExecutionProvider"``; ONNX Runtime's own names pass through."""
    key = name.strip() if isinstance(name, str) else ""  # None, a number: the unknown-provider sentence below
    if key.lower() in ALIASES:
        return ALIASES[key.lower()]
    if key in ort.get_all_providers():
        return key
    choices = ", ".join(["auto", *ALIASES])
    raise ProviderError(f"Unknown execution provider {name!r}; choose one of: {choices}, or an ONNX Runtime provider name.")


def short_name(provider: str) -> str:
    return SHORT.get(provider, provider)


@lru_cache(maxsize=None)
def _preload_cuda_libraries() -> None:
    # pip-installed CUDA/cuDNN (the `cuda` extra) live in site-packages/nvidia/*; ONNX Runtime
    # finds them only after preload_dlls() loads them into the process.
    if hasattr(ort, "preload_dlls") and importlib.util.find_spec("nvidia") is not None:
        ort.preload_dlls()


_DRIVER_LIB = "nvcuda.dll" if os.name == "nt" else "libcuda.so.1"


@lru_cache(maxsize=None)
def _nvidia_driver() -> bool:
    """Whether the NVIDIA driver's CUDA library loads (it comes with the driver, not with CUDA)."""
    try:
        ctypes.CDLL(_DRIVER_LIB)
    except OSError:
        return False
    return True


@lru_cache(maxsize=None)
def unavailable_reason(provider: str) -> str | None:
    """Why ``provider`` cannot start on this machine, or None when it looks startable."""
    if provider == CPU:
        return None
    if provider not in ort.get_available_providers():
        return f"this ONNX Runtime build ({ort.get_device()}) does not include it; install onnxruntime-gpu"
    lib = _PROVIDER_LIBS.get(provider)
    if lib is None:
        return None
    if not _nvidia_driver():  # first: without it, the CUDA libraries the loader misses would not help
        return f"no NVIDIA driver, {_DRIVER_LIB} not found"
    _preload_cuda_libraries()
    capi = Path(ort.__file__).parent / "capi"
    candidates = [p for p in capi.iterdir() if p.name.startswith(lib) or p.name.startswith("lib" + lib)]
    if not candidates:
        return f"{lib} is missing from the ONNX Runtime installation"
    try:
        ctypes.CDLL(str(candidates[0]), mode=getattr(os, "RTLD_LAZY", 0) | getattr(os, "RTLD_LOCAL", 0))
    except OSError as e:
        if "cannot open shared object" in str(e):
            return f"{str(e).split(':')[0].strip()} not found"
        return str(e)
    return None


@dataclass
class ProviderChoice:
    """What was asked for, what runs, and why anything else was skipped."""

    requested: str
    provider: str
    notes: list[str] = field(default_factory=list)
    # Nodes per provider as ONNX Runtime placed them (its verbose placement log); filled for GPU
    # sessions, where ONNX Runtime may quietly leave nodes it has no GPU kernel for on the CPU.
    placement: dict[str, int] = field(default_factory=dict)
    # TensorRT: this model's engine directory, and whether an engine was already cached there.
    engine_cache: str | None = None
    engine_cached: bool = True

    @property
    def fell_back(self) -> bool:
        return bool(self.notes)

    def summary(self) -> str:
        if not self.notes:
            return f"running on {short_name(self.provider)}"
        by_reason: dict[str, list[str]] = {}  # "tensorrt, cuda: no NVIDIA driver", not the same reason twice
        for n in self.notes:
            name, _, reason = n.partition(": ")
            by_reason.setdefault(reason, []).append(name)
        why = "; ".join(", ".join(names) + f": {reason}" for reason, names in by_reason.items())
        return f"running on {short_name(self.provider)} ({why})"

    def placement_line(self) -> str | None:
        """``"cuda 340 of 402 nodes (85%), cpu 62 (15%)"`` when some nodes left the provider, else None."""
        return placement_line(self.placement, self.provider)


PLACED = re.compile(r"(?:Node\(s\)|All nodes) placed on \[(\w+)\]\. Number of nodes: (\d+)")


def parse_placement(log: str) -> dict[str, int]:
    """Nodes per provider from ONNX Runtime's verbose log ("Node(s) placed on [X]. Number of nodes: N")."""
    return {m.group(1): int(m.group(2)) for m in PLACED.finditer(log)}


def placement_line(placement: dict[str, int], provider: str) -> str | None:
    others = {p: n for p, n in placement.items() if p != provider and n}
    if not others:
        return None
    total = sum(placement.values())
    ordered = sorted(placement.items(), key=lambda pn: (pn[0] != provider, -pn[1]))
    parts = [f"{short_name(p)} {n} of {total} nodes ({n / total:.0%})" if i == 0 else f"{short_name(p)} {n} ({n / total:.0%})"
             for i, (p, n) in enumerate(ordered)]
    note = "; TensorRT counts each subgraph it compiles as one node" if TENSORRT in placement else ""
    return ", ".join(parts) + note


_STDERR_LOCK = threading.Lock()
# One line of ONNX Runtime's own log: "2026-11-23 17:56:04.048 [V:onnxruntime:, file.cc:12 Fn] text".
_ORT_LINE = re.compile(r"^\d{4}-\d\d-\d\d [\d:.]+ \[([VIWEF]):onnxruntime:[^\]]*\] ?(.*)$")
# ONNX Runtime colours its warnings and errors ("\x1b[1;31m2026-..."; the reset may end a line of
# its own): taken out before the lines are read, or they were neither recognised nor kept (review)
_COLOUR = re.compile(r"\x1b\[[0-9;]*m")


@contextlib.contextmanager
def _verbose_log(options: ort.SessionOptions):
    """Route this session's verbose ONNX Runtime log into a buffer for the block's duration.

    ONNX Runtime writes its log to the C stderr and has no Python log callback, so file
    descriptor 2 is pointed at a temporary file while the session is created. Yields a list
    that holds the log text afterwards. Whatever else the process wrote to stderr meanwhile
    (other threads, a library's own messages) is written back to the real stderr; ONNX
    Runtime's own lines are not (edgeai reports what matters in its own words). Where stderr
    cannot be redirected (a windowed app without one), nothing is captured and placement stays
    unknown rather than failing the session.
    """
    captured: list[str] = []
    try:
        if sys.stderr is not None:
            sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, AttributeError, ValueError):
        yield captured
        return
    level = options.log_severity_level
    try:
        with _STDERR_LOCK, tempfile.TemporaryFile() as buf:
            try:
                options.log_severity_level = 0
                os.dup2(buf.fileno(), 2)
                yield captured
            finally:
                os.dup2(saved, 2)
                options.log_severity_level = level
                buf.seek(0)
                text = _COLOUR.sub("", buf.read().decode(errors="replace"))
                captured.append(text)
                others = [line for line in text.splitlines() if line.strip() and not _ORT_LINE.match(line)]
                if others:
                    os.write(2, ("\n".join(others) + "\n").encode(errors="replace"))
    finally:
        os.close(saved)


def first_error(log: str) -> str | None:
    """The first error line of a captured ONNX Runtime log, without its prefix."""
    for line in _COLOUR.sub("", log).splitlines():
        m = _ORT_LINE.match(line)
        if m and m.group(1) in "EF":  # without the C++ location that precedes ONNX Runtime's own words
            return re.sub(r"^.*\[ONNXRuntimeError\] : \d+ : \w+ : ", "", m.group(2).strip())[:300]
    return None


def tensorrt_flags(variant: str, info: dict) -> dict:
    """TensorRT builder flags for a variant. Precision lives in the graph, but ONNX Runtime builds
    weakly typed TensorRT networks, where float16 (and int8) layers are allowed only with their
    builder flag: without it an fp16 graph would run in fp32 kernels between casts."""
    if variant == "fp16":
        return {"trt_fp16_enable": True}
    if variant == "int8" and (info.get("recipe") or {}).get("preset") == "tensorrt":
        return {"trt_int8_enable": True, "trt_fp16_enable": True}
    return {}


def provider_options(provider: str, device_id: int = 0, engine_cache: str | os.PathLike | None = None,
                     flags: dict | None = None) -> dict:
    if provider == CUDA:
        # fp32 means fp32: TF32 matmuls change results by ~1e-4 relative (seen on an H100);
        # speed on GPU comes from the fp16 variant instead.
        return {"device_id": device_id, "use_tf32": 0}
    if provider == TENSORRT:
        opts: dict = {"device_id": device_id}
        if engine_cache is not None:
            Path(engine_cache).mkdir(parents=True, exist_ok=True)
            opts.update({
                "trt_engine_cache_enable": True,
                "trt_engine_cache_path": str(engine_cache),
                "trt_timing_cache_enable": True,
                "trt_timing_cache_path": str(engine_cache),
            })
        opts.update(flags or {})
        return opts
    return {}


def candidates(provider: str, strict: bool = True) -> list[str]:
    """Providers to try in order: a named one alone when strict, else it and those after it."""
    if provider == "auto":
        return list(AUTO_ORDER)
    name = canonical(provider)
    if strict or name not in AUTO_ORDER:
        return [name]
    return list(AUTO_ORDER[AUTO_ORDER.index(name):])


def create_session(
    model: str | os.PathLike,
    options: ort.SessionOptions,
    provider: str = "auto",
    strict: bool | None = None,
    device_id: int = 0,
    model_sha256: str | None = None,
    placement: bool | None = None,
    tensorrt: dict | None = None,
) -> tuple[ort.InferenceSession, ProviderChoice]:
    """Create an InferenceSession on the first provider that really starts.

    ``strict`` (default True) makes a named provider raise a :class:`ProviderError` that says
    what is missing instead of falling back; with ``strict=False`` a named provider falls back
    along TensorRT -> CUDA -> CPU. ``auto`` always falls back (that is what it means).

    ``placement`` (default: on for GPU providers) reads ONNX Runtime's verbose placement log into
    ``choice.placement``. ``model_sha256`` keys the TensorRT engine cache (hashed here if None);
    ``tensorrt`` adds TensorRT options (:func:`tensorrt_flags`).
    """
    strict = False if provider == "auto" else (True if strict is None else strict)
    wanted = candidates(provider, strict)
    choice = ProviderChoice(requested=provider, provider="")
    for cand in wanted:
        reason = unavailable_reason(cand)
        if reason is None:
            session, reason = _start(cand, model, options, strict, device_id, model_sha256, placement, tensorrt, choice)
            if session is not None:
                return session, choice
        note = f"{short_name(cand)}: {reason}"
        if strict:
            hint = ""
            if "NVIDIA driver" in reason:
                hint = " (it needs an NVIDIA GPU and its driver)"
            elif "libnvinfer" in reason:
                hint = " (install TensorRT 10 and put its libraries on the library path)"
            elif "not found" in reason:
                hint = " (install CUDA 13 and cuDNN 9, e.g. pip install 'edgeai[cuda]')"
            raise ProviderError(f"Execution provider {short_name(cand)} was requested but cannot start: {reason}{hint}.")
        choice.notes.append(note)
    if CPU not in wanted:
        session, _ = create_session(model, options, "cpu", strict=True, model_sha256=model_sha256, placement=placement)
        choice.provider = CPU
        return session, choice
    raise ProviderError(f"No execution provider could start ({'; '.join(choice.notes)}).")


def _start(cand: str, model, options: ort.SessionOptions, strict: bool, device_id: int, model_sha256: str | None,
           placement: bool | None, tensorrt: dict | None, choice: ProviderChoice) -> tuple[ort.InferenceSession | None, str]:
    """A session on ``cand`` (filling ``choice``), or None and why it did not start."""
    engine_cache = None
    if cand == TENSORRT:
        from . import gpu
        from .package import sha256_file

        engine_cache = gpu.engine_cache_dir(model_sha256 or sha256_file(model), device_id)
        choice.engine_cache, choice.engine_cached = str(engine_cache), gpu.has_engine(engine_cache)
    providers = [(cand, provider_options(cand, device_id, engine_cache, tensorrt))]
    if cand == TENSORRT and unavailable_reason(CUDA) is None:
        providers.append((CUDA, provider_options(CUDA, device_id)))  # nodes TensorRT rejects run on CUDA
    if cand != CPU and not strict:
        providers.append((CPU, {}))  # ORT places nodes the GPU provider lacks on CPU
    if cand == TENSORRT and not choice.engine_cached:
        log.warning("Building a TensorRT engine for %s (none cached for this model, ONNX Runtime, TensorRT and "
                    "GPU); this takes a while once, later loads read it from %s", Path(str(model)).name, engine_cache)
    capture = (cand != CPU) if placement is None else placement
    captured: list[str] = []
    error: Exception | None = None
    with (_verbose_log(options) if capture else contextlib.nullcontext(captured)) as captured:
        try:
            if cand == CPU:
                from ._ortcache import cpu_session

                session = cpu_session(model, options, model_sha256)
            else:
                session = ort.InferenceSession(str(model), options, providers=providers)
        except Exception as e:  # ORT raises bare RuntimeError/Fail subclasses
            error = e
    if error is not None:
        if cand == CPU:
            raise error
        reason = f"session creation failed: {(str(error).strip().splitlines() or [type(error).__name__])[0][:200]}"
        detail = first_error(captured[0]) if captured else None
        return None, reason + (f" ({detail})" if detail and detail not in reason else "")
    used = session.get_providers()[0]
    if used != cand:
        detail = first_error(captured[0]) if captured else None  # e.g. a CUDA library that would not load
        return None, f"ONNX Runtime fell back to {short_name(used)} at session creation" + (f" ({detail})" if detail else "")
    choice.provider = cand
    choice.placement = parse_placement(captured[0]) if captured else {}
    return session, ""
