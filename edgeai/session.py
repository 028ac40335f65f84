"""An ONNX Runtime session with one place that checks feeds against the manifest.

Like Polygraphy's ``BaseRunner.infer`` -> ``infer_impl``: :meth:`Session.run` checks names,
dtypes and shapes, then calls ONNX Runtime. The checks are cheap (no copies unless a safe cast
is needed) so ``Pipeline.run`` costs what ``InferenceSession.run`` costs.
"""

from __future__ import annotations

import logging
import os
import re
import threading
import time
from pathlib import Path
from typing import Mapping

import numpy as np
import onnxruntime as ort
from onnxruntime.capi import onnxruntime_pybind11_state as _ort_state

from . import providers as _providers
from .data.dtypes import ORT_TO_NUMPY, numpy_dtype
from .errors import InputError, PackageError, a_type

log = logging.getLogger("edgeai")



def session_options(threads: int | None = None, spin: bool = False) -> ort.SessionOptions:
    so = ort.SessionOptions()
    so.log_severity_level = 3
    if threads:
        so.intra_op_num_threads = int(threads)
        so.inter_op_num_threads = 1
    # The pool's threads sleep between calls instead of spinning: a program calling once a frame kept
    # a core busy between frames (30 fps: 32-40 ms of CPU per frame against 10 spinning off), and
    # where other threads want the cores (the program's own, image decoding, a neighbour) calls
    # took 1.5-2x as long (EPYC, 2 cores; review). On an idle machine, back-to-back calls are
    # 15-35% faster spinning: ``spin`` (a generator's decoder, whose steps come back to back) and
    # EDGEAI_SPIN=1 keep ONNX Runtime's default for that.
    spin = spin or os.environ.get("EDGEAI_SPIN") == "1"
    so.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin else "0")
    # Variants are stored already optimized at the portable (extended) level; the layout
    # transforms of ORT_ENABLE_ALL are hardware specific and are applied here, at load time.
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return so


class _Spec:
    __slots__ = ("name", "dtype", "shape", "rows")

    def __init__(self, d: dict):
        self.name = d["name"]
        self.dtype = numpy_dtype(d["dtype"])
        self.shape = tuple(d["shape"])
        self.rows = d.get("index_rows")  # ids into an embedding of this many rows (edgeai.data.graphs.index_tables)

    def describe(self) -> str:
        dims = ", ".join(str(s) for s in self.shape)
        return f"{self.dtype} [{dims}]"

    def check(self, value: object) -> np.ndarray | ort.OrtValue:
        if isinstance(value, ort.OrtValue):
            return self._check_ortvalue(value)
        if not isinstance(value, np.ndarray):
            raise InputError(f"Input {self.name!r} must be a numpy array of {self.describe()}; got {a_type(value)}.")
        if value.dtype != self.dtype:
            if not np.can_cast(value.dtype, self.dtype, "same_kind") or value.dtype.kind == "b":
                raise InputError(f"Input {self.name!r} must be {self.describe()}; got dtype {value.dtype}, which cannot be cast safely.")
            value = self._cast(value)
        if value.ndim != len(self.shape):
            raise InputError(
                f"Input {self.name!r} must have {len(self.shape)} dimensions ({self.describe()}); got shape {tuple(value.shape)}."
            )
        for axis, (want, got) in enumerate(zip(self.shape, value.shape)):
            if got == 0 and not (isinstance(want, str) and want.startswith("past_")):  # a KV cache starts empty
                raise InputError(f"Input {self.name!r} has an empty dimension {axis} (shape {tuple(value.shape)}).")
            if isinstance(want, int) and want != got:
                raise InputError(
                    f"Input {self.name!r} must have size {want} on axis {axis} ({self.describe()}); got shape {tuple(value.shape)}."
                )
        if value.dtype.kind == "f" and not np.isfinite(value).all():
            raise InputError(f"Input {self.name!r} contains NaN or infinite values.")
        if self.rows and value.size and ((lo := value.min()) < 0 or (hi := value.max()) >= self.rows):
            bad = lo if lo < 0 else hi
            raise InputError(f"Input {self.name!r} indexes a table of {self.rows} rows, so its values must be 0..{self.rows - 1}; "
                             f"got {bad}" + (" (ONNX Runtime would read a negative id from the end of the table)." if bad < 0 else "."))
        return value

    def _cast(self, value: np.ndarray) -> np.ndarray:
        """``value`` as the input's dtype, refusing values the dtype cannot hold: float64 1e300
        became inf (with numpy's overflow warning, review), int64 2**40 wrapped to another id."""
        with np.errstate(over="ignore", invalid="ignore"):
            cast = value.astype(self.dtype)
        kind = value.dtype.kind
        if self.dtype.kind == "f" and not np.isfinite(cast).all() and np.isfinite(value).all():  # int64 70000 -> float16 too
            info = np.finfo(self.dtype)
            bad = float(value.max()) if value.max() > info.max else float(value.min())
        elif kind in "iu" and self.dtype.kind in "iu" and value.size and not np.array_equal(cast, value):
            info = np.iinfo(self.dtype)
            bad = int(value.max()) if value.max() > info.max else int(value.min())
        elif (kind in "iu" and self.dtype.kind == "f" and value.size and np.iinfo(value.dtype).bits > np.finfo(self.dtype).nmant + 1
              and not np.array_equal(_back(cast, value.dtype), value)):  # (uint8 frames and the like always fit: not checked)
            # integers past 2**24 rounded into float32 without a word (two reviews): the user casts, knowing
            bad, exact = value[_back(cast, value.dtype) != value].flat[0], 2 ** (np.finfo(self.dtype).nmant + 1)
            raise InputError(f"Input {self.name!r} is {self.dtype}, which holds whole numbers exactly only up to {exact}; got {bad}, "
                             f"which it would round (cast the array to {self.dtype} yourself where that is acceptable).")
        else:
            return cast
        fix, show = ("scale the values to the model's range", "{:.4g}".format) if self.dtype.kind == "f" else ("ids and counts must fit it", str)
        raise InputError(f"Input {self.name!r} is {self.dtype}, which holds {show(info.min)}..{show(info.max)}; got {show(bad)} ({fix}).")

    def _check_ortvalue(self, value: ort.OrtValue) -> ort.OrtValue:
        """An OrtValue (e.g. already on the GPU) is bound as it is: its dtype and shape are
        checked, its values are not (reading them would copy them back to the host)."""
        dtype = ORT_TO_NUMPY.get(value.data_type())
        shape = tuple(value.shape())
        if dtype != self.dtype:
            raise InputError(f"Input {self.name!r} must be {self.describe()}; got an OrtValue of {value.data_type()}.")
        if len(shape) != len(self.shape) or any(isinstance(w, int) and w != g for w, g in zip(self.shape, shape)) or 0 in shape:
            raise InputError(f"Input {self.name!r} must be {self.describe()}; got an OrtValue of shape {shape}.")
        return value




class Session:
    """One model file on one provider. Safe to call from many threads (ONNX Runtime's run is).

    On CUDA and TensorRT every call goes through IO binding: inputs are bound where they are (a
    numpy array is copied to the GPU once, an ``OrtValue`` already on the GPU is not copied at
    all), outputs are allocated on the GPU and copied to the host once, into the arrays returned.
    ``run(feed, device_outputs=True)`` leaves them on the GPU as OrtValues for a next model.
    """

    def __init__(
        self,
        model: str | os.PathLike,
        inputs: list[dict],
        outputs: list[dict],
        provider: str = "auto",
        strict: bool | None = None,
        threads: int | None = None,
        device_id: int = 0,
        model_sha256: str | None = None,
        io_binding: bool | None = None,
        placement: bool | None = None,
        tensorrt: dict | None = None,
        spin: bool = False,
    ):
        self.inputs = [_Spec(d) for d in inputs]
        self._shared = shared_axes(self.inputs)  # worked out once, not per call (a frame loop's few microseconds)
        self.output_names = [d["name"] for d in outputs]
        self._pid = os.getpid()  # close() in a forked child leaves the session alone (see there)
        started = time.perf_counter()
        try:
            self._session, self.choice = _providers.create_session(
                model, session_options(threads, spin), provider, strict, device_id, model_sha256, placement, tensorrt
            )
        except _providers.ProviderError:
            raise
        except Exception as e:  # ONNX Runtime's own errors for unreadable or invalid models
            raise PackageError(f"ONNX Runtime could not load {model}: {ort_detail(e)[:300]}.") from None
        # A hand-edited manifest: an input the graph needs that no feed will carry (one the graph lacks
        # is refused at run time in one sentence: a fused decoder may drop one), or an output it lacks.
        graph_in, graph_out = [g.name for g in self._session.get_inputs()], [g.name for g in self._session.get_outputs()]
        name, fix = Path(model).name, "fix the manifest or export the model again"
        if missing := [n for n in graph_in if n not in {s.name for s in self.inputs}]:
            raise PackageError(f"{name} needs input {missing[0]!r}, which the package's manifest does not list "
                               f"(the graph's inputs: {', '.join(graph_in)}); {fix}.")
        if missing := [n for n in self.output_names if n not in graph_out]:
            raise PackageError(f"The package's manifest lists output {missing[0]!r}, which {name} does not have "
                               f"(its outputs: {', '.join(graph_out)}); {fix}.")
        gpu = self.provider in (_providers.CUDA, _providers.TENSORRT)
        self.io_binding = gpu if io_binding is None else bool(io_binding)
        self._device = ("cuda", device_id) if gpu else ("cpu", 0)
        self._run_options = ort.RunOptions()
        self._run_options.log_severity_level = 4  # a failed run raises (see run); its C++ log line would say it twice
        self._building: float | None = None  # TensorRT: start of a first build not yet reported
        self._build_lock = threading.Lock()
        if self.provider == _providers.TENSORRT and not self.choice.engine_cached:
            self._building = started
            self._report_build(final=False)  # fixed shapes: ONNX Runtime built the engine at creation

    @property
    def provider(self) -> str:
        return self.choice.provider

    def _report_build(self, final: bool = True) -> None:
        """Say once how long the TensorRT build took: ONNX Runtime builds at session creation for
        fixed shapes, at the first call for dynamic ones. Checked at creation and after the first
        call, then never again (no directory listing per call)."""
        from .gpu import has_engine

        with self._build_lock:
            if self._building is None:
                return
            if self.choice.engine_cache and has_engine(Path(self.choice.engine_cache)):
                log.warning("Built the TensorRT engine in %.1f s (cached in %s)", time.perf_counter() - self._building,
                            self.choice.engine_cache)
                self._building = None
            elif final:
                self._building = None  # TensorRT took no subgraph, or the cache is not writable: nothing to say

    def check(self, feed: Mapping[str, object]) -> dict[str, np.ndarray]:
        return check_feed(self.inputs, feed, self._shared)

    def run(self, feed: Mapping[str, object], device_outputs: bool = False) -> dict[str, np.ndarray]:
        checked = self.check(feed)
        try:
            if self.io_binding or device_outputs or any(isinstance(v, ort.OrtValue) for v in checked.values()):
                outs = self._run_bound(checked, device_outputs)
            else:
                outs = self._session.run(self.output_names, checked, self._run_options)
        except (_ort_state.InvalidArgument, _ort_state.Fail, _ort_state.RuntimeException) as e:
            if _ENGINE_FAILURE.search(str(e)):  # CUDA's out of memory comes as FAIL or RUNTIME_EXCEPTION
                raise self._engine_failed(e) from None
            # Names, dtypes and shapes were checked above; what ONNX Runtime still refuses is in the
            # values or in a node's own rule (token ids past the vocabulary, a Reshape that fits
            # only the traced shape): one sentence naming the node, not a C++ status dump.
            raise InputError(run_failure(e)) from None
        except (_ort_state.EPFail, _ort_state.EngineError, _ort_state.NotImplemented, _ort_state.DeviceReset) as e:
            # The engine, not the input: a GPU provider's own failure (out of memory, a lost
            # device), or a kernel this provider lacks for what the graph became at this shape.
            raise self._engine_failed(e) from None
        if self._building is not None:
            self._report_build()
        return dict(zip(self.output_names, outs))

    def _engine_failed(self, e: Exception) -> Exception:
        return _providers.ProviderError(f"The model could not run on {_providers.short_name(self.provider)}: {ort_detail(e)}.")

    def _run_bound(self, feed: dict, device_outputs: bool) -> list:
        # One binding per call: bindings are not shared between threads.
        binding = self._session.io_binding()
        for name, value in feed.items():
            if isinstance(value, ort.OrtValue):
                binding.bind_ortvalue_input(name, value)
            else:
                binding.bind_cpu_input(name, value)
        for name in self.output_names:
            binding.bind_output(name, *self._device)
        binding.synchronize_inputs()
        self._session.run_with_iobinding(binding, self._run_options)
        if device_outputs:
            return binding.get_outputs()
        return binding.copy_outputs_to_cpu()

    def close(self) -> None:
        if os.getpid() != self._pid:
            # A child forked from the process that made the session: ONNX Runtime's destructor waits
            # for a lock of thread-pool threads that only the parent has (a CI run hung here), so the
            # child keeps it; the child's memory is freed when it exits.
            _FORKED.append(self._session)
        self._session = None  # type: ignore[assignment]


_FORKED: list = []  # sessions a forked child closed (Session.close)


def check_feed(inputs: list[_Spec] | list[dict], feed: Mapping[str, object],
               shared: dict[str, list[tuple[str, int]]] | None = None) -> dict[str, np.ndarray]:
    """``feed`` checked against the model's inputs (names, dtypes cast where safe, ranks, fixed
    sizes, finite values, axes that share a name agreeing): the arrays to run, or one InputError
    sentence. ``inputs``: specs, or the manifest's input dicts; ``shared``: their shared_axes, where
    already known."""
    inputs = [s if isinstance(s, _Spec) else _Spec(s) for s in inputs]
    if not isinstance(feed, Mapping):
        raise InputError(f"Expected a dict of input name -> array ({_expected(inputs)}); got {a_type(feed)}.")
    if feed.keys() != (names := {s.name for s in inputs}):
        missing = sorted(names - set(feed))
        unknown = sorted(set(feed) - names)
        raise InputError(f"Inputs do not match the model: {_mismatch(missing, unknown)}; expected {_expected(inputs)}.")
    checked = {s.name: s.check(feed[s.name]) for s in inputs}
    # Axes with the same name must agree on their size (a batch of ids and its mask, their
    # sequence length); a fixed axis (a [2, E] edge list, a [8] scale) is checked by its spec.
    for label, members in (shared_axes(inputs) if shared is None else shared).items():
        got = {n if axis == 0 else f"{n} axis {axis}": shape_of(checked[n])[axis] for n, axis in members}
        if len(set(got.values())) > 1:
            shown = ", ".join(f"{n} {k}" for n, k in got.items())
            raise InputError(f"The inputs sharing the axis {label!r} must agree on its size; got {shown}.")
    return checked


def shared_axes(inputs: list[_Spec]) -> dict[str, list[tuple[str, int]]]:
    """Each axis name that more than one axis carries -> those axes, as (input, axis), in input order."""
    axes: dict[str, list[tuple[str, int]]] = {}
    for s in inputs:
        for axis, label in enumerate(s.shape):
            if isinstance(label, str):
                axes.setdefault(label, []).append((s.name, axis))
    return {label: m for label, m in axes.items() if len(m) > 1}


def shape_of(v) -> tuple | None:
    """A tensor's shape, numpy's or an OrtValue's (whose ``shape`` is a method); None for anything else."""
    shape = getattr(v, "shape", None)
    return tuple(shape()) if callable(shape) else shape


def _mismatch(missing: list[str], unknown: list[str]) -> str:
    return "; ".join([*([f"missing {missing}"] if missing else []), *([f"unknown {unknown}"] if unknown else [])])


def _expected(inputs: list[_Spec]) -> str:
    return ", ".join(f"{s.name}: {s.describe()}" for s in inputs)


# What the engine, not the input, failed at: memory, and the GPU libraries' own statuses.
_ENGINE_FAILURE = re.compile(r"out of memory|Failed to allocate memory|CUDA failure|CUBLAS_STATUS|CUDNN_STATUS|"
                             r"TensorRT EP|cudaError|CURAND_STATUS|CUFFT_", re.I)


def run_failure(error: Exception) -> str:
    """ONNX Runtime's run-time status as one sentence: "[ONNXRuntimeError] : 2 : INVALID_ARGUMENT :
    Non-zero status code returned while running Gather node. Name:'/e/Gather' Status Message: idx=50
    ..." becomes "The model could not run on this input: node /e/Gather (Gather): idx=50 ..."."""
    return f"The model could not run on this input: {ort_detail(error)}."


def ort_detail(error: Exception) -> str:
    """What an ONNX Runtime error says, in the user's words: the failing node and its message, or
    for a load the reason, without the status code, the C++ source location and its check, and
    without a final period (the caller's sentence goes on)."""
    import re

    text = str(error).strip() or type(error).__name__
    m = re.search(r"while running (\w+) node\. Name:'([^']*)' Status Message: (.*)", text, re.S)
    if m:
        op, node, detail = m.groups()
        where = f"node {node} ({op})" if node else f"a {op} node"
        text = f"{where}: {_without_source(detail.strip())}"
    else:
        text = re.sub(r"^\[ONNXRuntimeError\] : \d+ : \w+ : ", "", text)
        text = re.sub(r"^Load model from .*? failed: ?(?:Fatal error: )?", "", text, count=1, flags=re.S)
        text = _without_source(text)
    return " ".join(text.split()).rstrip(".")


def _without_source(detail: str) -> str:
    """"/onnxruntime_src/.../element_wise_ops.h:583 void onnxruntime::BroadcastIterator::Append(...)
    axis == 1 ... was false. Attempting to broadcast ...": the C++ source line and its check are
    not the user's words."""
    import re

    detail = re.sub(r"^\S+\.(?:h|cc|cpp):\d+ .*?\) ", "", detail, count=1, flags=re.S)
    return re.sub(r"^.*? was false\. ", "", detail, count=1, flags=re.S)


def _back(cast: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """Floats cast back to the integers they came from (a float past the integer type's range is
    not equal to any of them)."""
    with np.errstate(invalid="ignore", over="ignore"):
        return cast.astype(dtype)
