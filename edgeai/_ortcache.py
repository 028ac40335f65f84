"""CPU sessions from a graph already optimized for this machine: a faster first minute.

A variant is stored at ONNX Runtime's portable *extended* level; the hardware-specific rest of
``ORT_ENABLE_ALL`` (the NCHWc layout for convolutions, and more) is applied when a session is
created, every time: 110-140 of EfficientNet-Lite0's ~170 ms of session creation here. ONNX
Runtime can save the graph it optimized (``optimized_model_filepath``); the first CPU session of
a variant saves it in ``$EDGEAI_HOME/ort-cpu/``, keyed by the variant's sha256, the ONNX Runtime
version, this machine (the saved graph holds CPU-specific kernels, valid only here) and the fusions
left out (``CPU_DISABLED_OPTIMIZERS``), and later
sessions load it with optimization off (measured: 32-59 ms instead of 140-176 ms).

The saved file is checked against the sha256 recorded beside it when it was written; anything
unexpected (no cache directory, a damaged file, a failing load) falls back to the variant itself.
``EDGEAI_ORT_CACHE=0`` turns it off.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path

import onnxruntime as ort

# Larger graphs would need external data files to be saved; they gain little here anyway.
MAX_BYTES = 1 << 30
# A saved graph's sidecar is touched (at most daily) when a session loads the graph; graphs whose
# sidecar is older than this are removed when the next graph is saved.
UNUSED_DAYS = 30
_DAY = 86400

# ONNX Runtime load-time fusions left out on the CPU. SkipLayerNormFusion turns Add + LayerNormalization
# into SkipLayerNormalization, whose CPU kernel is a scalar loop per row with a division per element:
# about three times the time of the LayerNormalization and Add it replaces. Measured, all-MiniLM-L6-v2
# s128, 2 threads: 145-160 us per SkipLayerNormalization against 32 us per LayerNormalization plus
# 22 us per Add (Intel Xeon fam6/m167, AMX), 180 us against 65 plus the Add (AMD EPYC Zen 3); the
# dynamic INT8 variant runs 6.9 ms instead of 7.7 without it (benchmarks/results/bert-int8.md). The
# CUDA provider keeps the fusion (its kernel is a fused one that pays).
CPU_DISABLED_OPTIMIZERS = ["SkipLayerNormFusion"]
# In the saved graphs' names, so that a graph saved under other load-time fusions is not reused.
_FUSIONS_TAG = "no-" + "-".join(sorted(CPU_DISABLED_OPTIMIZERS)).lower()


def plain_cpu_session(model: str | os.PathLike, options: ort.SessionOptions) -> ort.InferenceSession:
    """An InferenceSession of ``model`` on the CPU provider alone, loaded as edgeai loads every CPU
    graph: without the fusions in CPU_DISABLED_OPTIMIZERS."""
    return ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"],
                                disabled_optimizers=CPU_DISABLED_OPTIMIZERS)


def _has_external_data(model) -> bool:
    """Graphs with external weights are not cached (saving them would need their data files)."""
    folder = Path(model).parent
    return any(folder.glob("*.data")) or any(folder.glob("*.onnx_data"))


def _cache_file(model_sha256: str) -> Path:
    from .home import home
    from .machine import machine_id

    here = hashlib.sha256(machine_id().encode()).hexdigest()[:8]
    return home() / "ort-cpu" / f"{model_sha256[:20]}-ort{ort.__version__}-{here}-{_FUSIONS_TAG}.onnx"


def _saved_ok(path: Path) -> bool:
    from ._stamps import owned, remembered
    from .package import _hash_and_scan

    if not (owned(path.parent) and owned(path) and owned(path.with_suffix(".json"))):
        return False
    try:
        expected = json.loads(path.with_suffix(".json").read_text(encoding="utf-8"))["sha256"]
        return path.is_file() and remembered(path, _hash_and_scan)[0] == expected
    except (OSError, ValueError, KeyError, TypeError):
        return False


def cpu_session(model: str | os.PathLike, options: ort.SessionOptions, model_sha256: str | None) -> ort.InferenceSession:
    """An InferenceSession on the CPU provider, through the per-machine optimized graph when possible."""
    wanted = options.graph_optimization_level == ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if (not model_sha256 or not wanted or os.environ.get("EDGEAI_ORT_CACHE") == "0"
            or os.path.getsize(model) > MAX_BYTES or _has_external_data(model)):
        return plain_cpu_session(model, options)
    cache = _cache_file(model_sha256)
    if _saved_ok(cache):
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        try:
            session = plain_cpu_session(cache, options)
            _mark_used(cache)
            return session
        except Exception:  # a graph this ONNX Runtime cannot read back: use the variant itself
            options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
            return plain_cpu_session(model, options)
    return _create_and_save(model, options, cache)


def _create_and_save(model, options: ort.SessionOptions, cache: Path) -> ort.InferenceSession:
    from ._stamps import private_dir, write_private
    from .package import sha256_file

    tmp = cache.with_name(f"{cache.name}.{os.getpid()}.tmp")
    try:
        private_dir(cache.parent)
        options.optimized_model_filepath = str(tmp)
        session = plain_cpu_session(model, options)
    except Exception:  # ONNX Runtime fails the session when it cannot write the file: load plainly
        _remove(tmp)  # review: where the cache folder cannot be, unlinking failed too, and the load with it
        options.optimized_model_filepath = ""
        return plain_cpu_session(model, options)
    try:  # best effort, atomic: the sidecar last, so a saved graph without one is never trusted
        if tmp.is_file():
            os.chmod(tmp, 0o600)  # ONNX Runtime writes it under the umask: group-writable is never trusted
            os.replace(tmp, cache)
            side = cache.with_suffix(f".{os.getpid()}.tmp.json")
            write_private(side, json.dumps({"sha256": sha256_file(cache), "source": str(model)}))
            os.replace(side, cache.with_suffix(".json"))
            _drop_superseded(cache)
            _drop_unused(cache.parent)
    except OSError:
        pass
    finally:
        _remove(tmp)
    return session


def _remove(path: Path) -> None:
    """Remove a temporary file, if it can be: the cache is best effort, and never fails a load."""
    try:
        path.unlink(missing_ok=True)
    except OSError:
        pass


def _drop_superseded(cache: Path) -> None:
    """Remove the graphs this variant saved on this machine and ONNX Runtime under other fusions
    (an earlier edgeai's untagged name included): they are never read again, and each holds the
    variant's weights. Other processes' temporary files are left alone."""
    prefix = cache.name[: -len(f"-{_FUSIONS_TAG}.onnx")]
    for old in cache.parent.glob(f"{prefix}*"):
        if old.suffix in (".onnx", ".json") and ".tmp" not in old.name and old.stem != cache.stem:
            old.unlink(missing_ok=True)


def _mark_used(cache: Path) -> None:
    """Record that a session loaded this saved graph: its sidecar's mtime, touched at most once a day."""
    side = cache.with_suffix(".json")
    try:
        if time.time() - side.stat().st_mtime > _DAY:
            os.utime(side)
    except OSError:
        pass


def _drop_unused(folder: Path) -> None:
    """Remove the saved graphs no session has loaded for UNUSED_DAYS (last use: the sidecar's mtime,
    or the graph's own when it has no sidecar), and temporary files a killed process left a day ago."""
    now = time.time()
    for path in folder.iterdir():
        try:
            if ".tmp" in path.name:
                stale = now - path.stat().st_mtime > _DAY
            elif path.suffix == ".onnx":
                side = path.with_suffix(".json")
                stale = now - (side if side.exists() else path).stat().st_mtime > UNUSED_DAYS * _DAY
            elif path.suffix == ".json" and not path.with_suffix(".onnx").exists():  # its graph is gone
                stale = now - path.stat().st_mtime > UNUSED_DAYS * _DAY
            else:
                continue
            if stale:  # the sidecar first: a graph without one is never trusted
                if path.suffix == ".onnx":
                    path.with_suffix(".json").unlink(missing_ok=True)
                path.unlink(missing_ok=True)
        except OSError:
            pass
