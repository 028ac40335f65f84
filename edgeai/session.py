"""An ONNX Runtime session with one place that checks feeds against the manifest.

Like Polygraphy's ``BaseRunner.infer`` -> ``infer_impl``: :meth:`Session.run` checks names,
dtypes and shapes, then calls ONNX Runtime. The checks are cheap (no copies unless a safe cast
is needed) so ``Pipeline.run`` costs what ``InferenceSession.run`` costs.
"""

from __future__ import annotations

import os
from typing import Mapping

import numpy as np
import onnxruntime as ort

from . import providers as _providers
from .errors import InputError, PackageError

_DTYPES = {
    "float32": np.float32,
    "float16": np.float16,
    "int64": np.int64,
    "int32": np.int32,
    "uint8": np.uint8,
    "int8": np.int8,
    "bool": np.bool_,
}


def session_options(threads: int | None = None) -> ort.SessionOptions:
    so = ort.SessionOptions()
    so.log_severity_level = 3
    if threads:
        so.intra_op_num_threads = int(threads)
        so.inter_op_num_threads = 1
    # Variants are stored already optimized at the portable (extended) level; the layout
    # transforms of ORT_ENABLE_ALL are hardware specific and are applied here, at load time.
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return so


class _Spec:
    __slots__ = ("name", "dtype", "shape")

    def __init__(self, d: dict):
        self.name = d["name"]
        self.dtype = np.dtype(_DTYPES[d["dtype"]])
        self.shape = tuple(d["shape"])

    def describe(self) -> str:
        dims = ", ".join(str(s) for s in self.shape)
        return f"{self.dtype} [{dims}]"

    def check(self, value: object) -> np.ndarray:
        if not isinstance(value, np.ndarray):
            raise InputError(f"Input {self.name!r} must be a numpy array of {self.describe()}; got a {type(value).__name__}.")
        if value.dtype != self.dtype:
            if not np.can_cast(value.dtype, self.dtype, "same_kind") or value.dtype.kind == "b":
                raise InputError(f"Input {self.name!r} must be {self.describe()}; got dtype {value.dtype}, which cannot be cast safely.")
            value = value.astype(self.dtype)
        if value.ndim != len(self.shape):
            raise InputError(
                f"Input {self.name!r} must have {len(self.shape)} dimensions {self.describe()}; got shape {tuple(value.shape)}."
            )
        for axis, (want, got) in enumerate(zip(self.shape, value.shape)):
            if got == 0:
                raise InputError(f"Input {self.name!r} has an empty dimension {axis} (shape {tuple(value.shape)}).")
            if isinstance(want, int) and want != got:
                raise InputError(
                    f"Input {self.name!r} must have size {want} on axis {axis} {self.describe()}; got shape {tuple(value.shape)}."
                )
        if value.dtype.kind == "f" and not np.isfinite(value).all():
            raise InputError(f"Input {self.name!r} contains NaN or infinite values.")
        return value


class Session:
    """One model file on one provider. Safe to call from many threads (ONNX Runtime's run is)."""

    def __init__(
        self,
        model: str | os.PathLike,
        inputs: list[dict],
        outputs: list[dict],
        provider: str = "auto",
        strict: bool | None = None,
        threads: int | None = None,
        device_id: int = 0,
    ):
        self.inputs = [_Spec(d) for d in inputs]
        self._names = {s.name for s in self.inputs}
        self.output_names = [d["name"] for d in outputs]
        try:
            self._session, self.choice = _providers.create_session(
                model, session_options(threads), provider, strict, device_id
            )
        except _providers.ProviderError:
            raise
        except Exception as e:  # ONNX Runtime's own errors for unreadable or invalid models
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise PackageError(f"ONNX Runtime could not load {model}: {first[:300]}") from None

    @property
    def provider(self) -> str:
        return self.choice.provider

    def check(self, feed: Mapping[str, object]) -> dict[str, np.ndarray]:
        if not isinstance(feed, Mapping):
            raise InputError(f"Expected a dict of input name -> array ({self._expected()}); got a {type(feed).__name__}.")
        if feed.keys() != self._names:
            missing = sorted(self._names - set(feed))
            unknown = sorted(set(feed) - self._names)
            raise InputError(f"Inputs do not match the model: missing {missing}, unknown {unknown}; expected {self._expected()}.")
        checked = {s.name: s.check(feed[s.name]) for s in self.inputs}
        batch = {v.shape[0] for v in checked.values()}
        if len(batch) > 1:
            raise InputError(f"All inputs must have the same batch size; got {sorted(batch)}.")
        return checked

    def _expected(self) -> str:
        return ", ".join(f"{s.name}: {s.describe()}" for s in self.inputs)

    def run(self, feed: Mapping[str, object]) -> dict[str, np.ndarray]:
        outs = self._session.run(self.output_names, self.check(feed))
        return dict(zip(self.output_names, outs))

    def close(self) -> None:
        self._session = None  # type: ignore[assignment]
