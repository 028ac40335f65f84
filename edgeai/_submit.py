"""``Pipeline.submit``: a call on the pipeline's one worker thread, for a loop that must not wait
(a game's frame, a desktop program's event loop). The input is copied first, so the caller may
reuse its buffers at once; every input submitted runs, in order."""

from __future__ import annotations

import functools
import io
import threading
from collections.abc import Iterator, KeysView, ValuesView
from typing import TYPE_CHECKING, Any, Mapping

import numpy as np

from .errors import EdgeAIError, PipelineClosedError

if TYPE_CHECKING:  # concurrent.futures is imported by the first submit(), not by every start-up
    from concurrent.futures import Future

CLOSED = "The pipeline is closed; load the model again with edgeai.load(...)."


class Submitting:
    """``submit`` and its worker's job, for :class:`edgeai.pipeline.Pipeline` (whose ``_cond``,
    ``_closed``, ``_busy``, ``_executor``, ``_worker``, ``_local`` and ``_finished`` they share)."""

    def submit(self, x: Any, top_k: int | None = None, generate: bool = False, **options: Any) -> Future:
        """``predict`` (or, with ``generate=True`` or any of generate's options, ``generate(x,
        **options)``) on a worker thread; the Future holds the same result (or error). A Future
        submitted before ``close()`` still completes (close waits for it) unless ``close(cancel_futures=True)``
        cancels it before it starts, as leaving a ``with`` block by an error does. Arrays and images are
        copied here, so a loop may reuse its frame buffer as soon as ``submit`` returns. Every
        input submitted runs, in order: a frame loop submits its next once the last is ``done()``."""
        if "generation" in self.package.manifest and top_k is not None:
            options["top_k"] = top_k  # generate's sampling top_k, not predict's
        elif options and (unknown := [k for k in options if k not in _generate_options()]):  # topk=3 read as a generation (review)
            raise TypeError(f"submit() got an unexpected keyword argument {unknown[0]!r} (predict takes top_k)")
        generate = generate or bool(options)  # max_new_tokens=... alone once ran predict and dropped it
        if self._closed:  # before the request's own checks: a closed pipeline's first error is that
            raise PipelineClosedError(CLOSED)
        if generate:
            from .generation import check_request

            check_request(self, options)  # raised here, not by .result()
        else:
            self.check_top_k(top_k)  # top_k for a model without classes: here too, not by .result()
        x = _own(x)
        with self._cond:
            if self._closed:
                raise PipelineClosedError(CLOSED)
            if self._executor is None:
                from concurrent.futures import ThreadPoolExecutor

                self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="edgeai")
            future = self._executor.submit(self._job, x, top_k, options if generate else None, self._cancels)
            self._busy += 1  # the job's _finished() waits for this lock, so it counts after this
            # a Future cancelled while queued never runs _job: give its count back, or close() waits for ever
            future.add_done_callback(lambda f: f.cancelled() and self._finished())
            return future

    def _cancel_queued(self, executor) -> None:
        """close(cancel_futures=True): the Futures not started are cancelled, their done-callbacks run on this thread
        under the executor's lock; a close() in one returns at once (review: a second shutdown waited on that lock)."""
        self._local.cancelling = True
        try:
            executor.shutdown(wait=False, cancel_futures=True)  # each cancelled Future gives its count back
        finally:
            self._local.cancelling = False

    def _job(self, x: Any, top_k: int | None, generate: dict | None = None, cancels: int | None = None) -> Any:
        self._worker = threading.get_ident()  # close() from a Future's callback runs on this thread
        self._local.depth = 1  # counted in _busy by submit: runs even when close() has begun
        self._local.cancels = cancels  # a cancel() after submit() stops this job's generation too
        try:
            return self.generate(x, **generate) if generate is not None else self.predict(x, top_k)
        finally:
            self._local.depth, self._local.cancels = 0, None
            self._finished()


@functools.cache
def _generate_options() -> frozenset[str]:
    """The keywords ``submit(**options)`` hands to ``generate``: a name outside them is a mistake, said at once."""
    import inspect

    from .pipeline import Pipeline

    return frozenset(inspect.signature(Pipeline.generate).parameters) - {"self", "prompt"}


def _own(x: Any) -> Any:
    """``x`` with its arrays and images copied, also in a list, tuple or dict: only top-level arrays
    were, and a dict's or a PIL image's change after submit reached the result (review)."""
    if isinstance(x, np.ndarray):
        return x.copy()
    if _a_stream(x):  # a generator of frames: read now, as predict reads it, or the worker read the reused buffer (review)
        return [_own(v) for v in x]
    if type(x) in (list, tuple):
        return type(x)(_own(v) for v in x)
    if isinstance(x, Mapping):
        return {k: _own(v) for k, v in x.items()}
    if type(x).__module__.startswith("PIL.") and hasattr(x, "copy"):
        from .preprocess import as_image

        try:  # decoded as predict decodes it: a damaged or closed file stays the Future's one sentence
            return as_image(x).copy()
        except EdgeAIError:
            return x
    return x


def _a_stream(x: Any) -> bool:
    """A generator, map or other one-pass iterator of inputs (not a file object, which reads as a path is meant to),
    or a dict's keys or values (``predict(d.keys())`` was "a dict_keys object, not a string"; embed read them)."""
    return (isinstance(x, Iterator) and not isinstance(x, io.IOBase)) or isinstance(x, (KeysView, ValuesView))
