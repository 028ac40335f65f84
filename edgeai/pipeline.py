"""``edgeai.load(...)`` -> :class:`Pipeline`: a package, a chosen variant, a session, pre/post."""

from __future__ import annotations

import contextlib
import functools
import os
import threading
import weakref
from typing import TYPE_CHECKING, Any, Callable, Mapping

import numpy as np

from . import rows, tasks, text
from .home import open_package  # noqa: F401  (re-exported: where a package is found)
from .errors import InputError, PipelineClosedError, a_type, with_article
from .package import VARIANTS, Package
from ._submit import CLOSED, Submitting, _a_stream
from .choice import LOSSY, LOSSY_MARGIN, check_threads, choose_variant, for_provider, meets_budget, recorded_latency, resolve_threads, resolve_variant, start  # noqa: F401  (re-exported)

if TYPE_CHECKING:  # concurrent.futures is imported by submit(), not by every start-up
    from concurrent.futures import ThreadPoolExecutor


def _guarded(method: Callable) -> Callable:
    """A public call: refused with :class:`PipelineClosedError` once the pipeline is closed, and
    waited for by ``close()`` while it runs."""

    @functools.wraps(method)
    def call(self: "Pipeline", *args: Any, **kwargs: Any) -> Any:
        # Inline, not _in_call: a generator context manager per call cost a frame loop ~3 us (predict() makes four).
        # Ctrl-C lands at a Python function's start or after a call, never between two plain statements: the count
        # and its flag change together under a C lock, inside the try. A signal in Condition.__exit__ (Python) left
        # a call counted for ever, and close() waited on it (review: about one in 10^4 interrupts).
        depth, counted = getattr(self._local, "depth", 0), False
        try:
            if depth == 0:
                with self._lock:
                    if self._closed:
                        raise PipelineClosedError(CLOSED)
                    self._busy += 1
                    counted = True
            self._local.depth = depth + 1
            return method(self, *args, **kwargs)
        finally:
            self._local.depth = depth
            if counted:
                with self._lock:
                    self._busy -= 1
                    self._cond.notify_all()  # a signal inside it: close() still sees the count, it polls

    return call


# Images run in batches of at most this many: the activations of one batch grow with it.
IMAGE_CHUNK = 32

# Every live pipeline, so that a forked child resets their threads' state (Pipeline._forked).
_PIPELINES: "weakref.WeakSet[Pipeline]" = weakref.WeakSet()
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=lambda: [p._forked() for p in list(_PIPELINES)])


class Pipeline(Submitting):
    """A loaded model: ``predict`` for raw inputs, ``run`` for ready tensors, ``submit`` for futures."""

    def __init__(
        self,
        package: Package,
        provider: str = "auto",
        variant: str = "auto",
        strict: bool | None = None,
        threads: int | None = None,
        device_id: int = 0,
    ):
        self.package = package
        m = package.manifest
        variant, self.variant_reason, self.threads, self.session = start(package, provider, variant, strict, threads, device_id)
        self.variant = variant
        self.provider = self.session.provider
        self._pre = tasks.preprocessor(package, [t["name"] for t in m["inputs"]])  # edgeai.tasks, by the manifest's types
        self._post_spec = m.get("postprocess", {"type": "none"})
        self._post = tasks.postprocessor(package)
        self._rows = rows.per_row(m, package.variants[variant])  # a dynamic INT8 variant of a batch model: one row per call (edgeai.rows)
        self.labels = package.labels
        self._executor: ThreadPoolExecutor | None = None
        self._lock = threading.RLock()  # a C lock: `with self._lock` runs no Python code, so Ctrl-C cannot land inside it
        self._cond = threading.Condition(self._lock)  # guards _busy, _closed and _executor
        self._busy = 0  # calls in flight (outermost ones) and submitted jobs not finished
        self._closed = False
        self._local = threading.local()  # this thread's call depth: inner calls are not refused
        self._gen = None  # the generation loop of a text-generation package, made on first use
        self._requests: set = set()  # generations in flight, for close()
        self._cancels = 0  # cancel() calls so far: a generation requested before the last one stops (generation.generate)
        self._worker: int | None = None  # the submit worker's thread
        _PIPELINES.add(self)

    def _forked(self) -> None:
        """In a child made by ``fork``: the submit worker and the calls in flight stayed in the parent,
        so start from none (review: the child's ``submit`` waited for ever on a thread it lacks)."""
        self._executor, self._worker, self._busy, self._gen = None, None, 0, None  # the generation loop's locks too
        self._lock = threading.RLock()  # it may have been held by a thread the child lacks
        self._cond = threading.Condition(self._lock)
        self._requests = set()

    # -- description -------------------------------------------------------------------------
    name = property(lambda self: self.package.name, doc="The package's name.")
    task = property(lambda self: self.package.task, doc="The package's task.")

    @property
    def provider_note(self) -> str:
        """One line: which provider runs and why any preferred one was skipped."""
        return self.session.choice.summary()

    @property
    def placement(self) -> dict[str, int]:
        """Nodes per provider as ONNX Runtime placed them (GPU sessions; empty on CPU, where all are)."""
        return dict(self.session.choice.placement)

    @property
    def placement_note(self) -> str | None:
        """``"cuda 340 of 402 nodes (85%), cpu 62 (15%)"`` when not every node runs on the provider, else None."""
        return self.session.choice.placement_line()

    def __repr__(self) -> str:
        return f"Pipeline({self.name!r}, variant={self.variant!r}, provider={self.provider!r})"

    def __reduce__(self):  # copy.copy shared the session (closing the copy broke this one), pickle raised ONNX Runtime's TypeError (review)
        raise InputError(f"{self!r} cannot be copied or pickled: it holds an ONNX Runtime session. Share it between "
                         "threads, or call edgeai.load() again in each process.")

    __copy__ = __deepcopy__ = lambda self, *memo: self.__reduce__()  # noqa: E731

    # -- running -----------------------------------------------------------------------------
    @_guarded
    def run(self, feed: Mapping[str, Any], device_outputs: bool = False) -> dict[str, Any]:
        """Ready tensors in (checked against the manifest), raw outputs out, by name.

        Inputs are numpy arrays or ``onnxruntime.OrtValue`` (e.g. already on the GPU, bound
        without a copy). ``device_outputs=True`` returns OrtValues left where the provider made
        them (on the GPU for CUDA/TensorRT) instead of numpy arrays."""
        text.check_positions(feed, self.package.manifest)
        return self.session.run(feed, device_outputs)

    @property
    def is_text(self) -> bool:
        return (self._pre is not None and self._pre.kind == "text") or "generation" in self.package.manifest

    @_guarded
    def preprocess(self, items: list[Any]) -> dict[str, np.ndarray]:
        """Raw inputs (images or texts) -> the feed dict, padded to the batch's longest text."""
        if self._pre is None:
            raise InputError(f"The {self.task} model {self.name!r} takes ready tensors: use Pipeline.run(feed).")
        return self._pre.batch(items)

    @_guarded
    def postprocess(self, outputs: dict[str, np.ndarray], k: int | None = None, items: list[Any] | None = None) -> list[dict]:
        """Raw outputs of a batch -> one result dict per item (the package's postprocess type;
        token classification also needs the batch's ``items``, the texts)."""
        if getattr(self._post, "needs_inputs", False):
            if items is None:
                raise InputError(f"postprocess() of the {self.task} model {self.name!r} needs the batch's texts: pass items=.")
            return self._post(outputs, k, items=items)
        return self._post(outputs, k)

    def _run_texts(self, items: list[Any]) -> dict[str, np.ndarray]:
        """Texts -> outputs, in length-sorted chunks (one text per call for a dynamic INT8 variant)."""
        size = 1 if text.one_text_per_call(self.package.variants[self.variant]) else text.TEXT_CHUNK
        if isinstance(tok := getattr(self._pre, "tokenizer", None), text.TextPreprocessor):  # each chunk padded on its own
            return text.run_encoded(self.run, tok, tok.encode(items), size)
        return text.run_in_chunks(self.run, self.preprocess(items), size)  # a plugin's preprocessor: its feed

    @_guarded
    def embed(self, texts: str | list[str]) -> np.ndarray:
        """Texts -> ``(n, dim)`` float32 embeddings (L2-normalized when the package says so)."""
        if self._post_spec["type"] != "embedding":
            use = "generate, or `edgeai generate`" if "generation" in self.package.manifest else "predict, or `edgeai run`"
            raise InputError(f"embed() needs an embedding model; {self.name!r} is {with_article(self.task)} model (use {use}).")
        texts = text.numpy_texts(texts)
        if isinstance(texts, (Mapping, set, frozenset)):  # a dict would embed its keys; a set's rows, in no order
            raise InputError(f"embed() takes a text or a list of texts (rows in their order); got {a_type(texts)}.")
        items = [texts] if isinstance(texts, (str, bytes, bytearray)) or not hasattr(texts, "__iter__") else list(texts)
        if not items:
            raise InputError("embed() was given no texts; pass at least one string.")
        out = self._run_texts(items)
        return np.ascontiguousarray(out[self._post.output], dtype=np.float32)

    @property
    def ranks_classes(self) -> bool:  # whether results rank classes (top_k): a classifier's
        return self._post_spec.get("type") == "classification"

    def check_top_k(self, k: int | None) -> None:
        """Refuse a ``top_k`` that would be ignored (only classifiers rank classes) or is not a count."""
        tasks.check_top_k(self.package, k)

    def _predict_tensor(self, x: Any) -> dict:
        """A ``tensor`` model: an array (one input), a dict of arrays or a .npy/.npz path -> raw outputs."""
        if isinstance(x, (str, os.PathLike)):
            from .data.feeds import load_arrays

            x = load_arrays(x, [i.name for i in self.session.inputs])
        if isinstance(x, Mapping):
            feed = {k: np.asarray(v) for k, v in x.items()}
        elif len(self.session.inputs) == 1:
            feed = {self.session.inputs[0].name: np.asarray(x)}
        else:
            names = [i.name for i in self.session.inputs]
            raise InputError(f"The model {self.name!r} takes {len(names)} inputs {names}; pass a dict of arrays.")
        return {"outputs": self._run_batch(feed)}

    def _run_batch(self, feed: dict[str, np.ndarray], chunk: int | None = None) -> dict[str, np.ndarray]:
        """``run``, one row per call for a dynamic INT8 variant (edgeai.rows), so that a row's result is the
        same in any batch; with ``chunk`` (preprocessed images, whose first axis is the batch's), a long
        list in chunks of that many (one batch of 256 photos took 2.3 GB of activations; review)."""
        # checked whole first: a mistake is said of the batch given, not of a row
        if self._rows:
            return rows.run_rows(self.run, self.session.check(feed), self._rows)
        n = len(next(iter(feed.values())))
        if chunk is None or n <= chunk:
            return self.run(feed)
        checked = self.session.check(feed)
        parts = [self.run({k: v[i : i + chunk] for k, v in checked.items()}) for i in range(0, n, chunk)]
        return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}

    @_guarded
    def predict(self, x: Any, top_k: int | None = None) -> dict | list[dict]:
        """One input -> one result; a list -> a list of results, run batched (images: 32 at a time; texts: in
        length-sorted chunks, and one per call for a dynamic INT8 variant).

        For a ``tensor`` model, an array, a dict of arrays or a .npy/.npz path is one input (a whole batch)."""
        self.check_top_k(top_k)
        if "generation" in self.package.manifest:  # a text-generation package: predict is generate
            return self.generate(x)
        x = list(x) if _a_stream(x) else x  # a generator or map of inputs is a list of them, as embed() takes it
        if self._pre is None and self._post_spec["type"] == "none" and (not isinstance(x, (list, tuple)) or len(x)):  # []: below
            if isinstance(x, (list, tuple)):
                return [self._predict_tensor(item) for item in x]
            return self._predict_tensor(x)
        if self.is_text:
            x = text.numpy_texts(x)
        single = not isinstance(x, (list, tuple))
        items = [x] if single else list(x)
        if not items:
            raise InputError("predict() was given an empty list; pass at least one input.")
        if self.is_text:
            outputs = self._run_texts(items)
        else:
            outputs = self._run_batch(self.preprocess(items), IMAGE_CHUNK if getattr(self._pre, "kind", None) == "image" else None)
        results = self.postprocess(outputs, top_k, items)
        return results[0] if single else results

    @_guarded
    def predict_each(self, inputs: list[Any], top_k: int | None = None) -> list[dict]:
        """Each input on its own account: one result per input, in order, as ``edgeai run`` prints them.

        A result is ``{"input": <the path or text, "array[i]" or "input[i]">, ...predict's fields}`` (a line read
        from a file, a :class:`edgeai.text_inputs.TextLine`, is ``{"input": "<path>:<line>", "text", ...}``), or
        ``{"input", "error": "<one sentence>"}`` for an input that cannot run (a missing or corrupt
        image, an empty text, an unreadable array file); the others still run. Images and texts
        that pass their checks run as one batch; a ``tensor`` model runs each input alone, a path
        read with :func:`edgeai.data.feeds.load_arrays` (``.npy`` for single-input models, ``.npz``
        of arrays by input name). Text truncation is reported with ``warnings.warn`` (the CLI
        prints each as a ``warning:`` line)."""
        from .bulk import predict_each  # each input's error isolated: bulk.py's concern, shared with `edgeai run`

        return predict_each(self, inputs, top_k)

    # -- text generation (edgeai.generation) -----------------------------------------------------
    @_guarded
    def generate(self, prompt: Any, max_new_tokens: int = 64, temperature: float = 0.0, top_k: int | None = None,
                 top_p: float | None = None, repetition_penalty: float | None = None, seed: int | None = None,
                 stop: str | list[str] | None = None, stream: bool = False, cancel: threading.Event | None = None,
                 stats: dict | None = None) -> Any:
        """A text-generation package's continuation of ``prompt`` (a list: one result each; a list
        of {"role", "content"} dicts: one chat, through the model's chat template, whose last message, if the
        assistant's, is continued): ``{"text",
        "prompt_tokens", "new_tokens", "finish_reason", "ttft_ms", "tokens_per_s"}``. Greedy at
        temperature 0, else sampled (top_k, top_p, seed as in transformers; repetition_penalty and
        no_repeat_ngram_size default to the checkpoint's generation_config, as in transformers);
        stops at EOS, a ``stop`` string (left out), max_new_tokens, or when ``cancel`` (a
        threading.Event) is set or :meth:`cancel` is called, from any thread. ``stream=True``
        returns an iterator of text pieces that join into the text (``stats`` receives the result)."""
        from .generation import generate

        return generate(self, prompt, stream=stream, cancel=cancel, stats=stats, max_new_tokens=max_new_tokens,
                        temperature=temperature, top_k=top_k, top_p=top_p, repetition_penalty=repetition_penalty,
                        seed=seed, stop=stop)

    def cancel(self) -> None:
        """Stop every generation in flight at its next step (finish_reason "cancelled"): those running,
        submitted, streams not yet read and the rest of a list of prompts. The caller's own ``cancel``
        Events are left as they are."""
        with self._cond:
            self._cancels += 1

    @contextlib.contextmanager
    def _track(self, req):
        with self._cond:
            self._requests.add(req)
        try:
            yield
        finally:
            with self._cond:
                self._requests.discard(req)

    @contextlib.contextmanager
    def _in_call(self):
        """A call (a generation) in a ``with``: counted as _guarded counts, and as safe from Ctrl-C."""
        depth, counted = getattr(self._local, "depth", 0), False
        try:
            if depth == 0:
                with self._lock:
                    if self._closed:
                        raise PipelineClosedError(CLOSED)
                    self._busy += 1
                    counted = True
            self._local.depth = depth + 1
            yield
        finally:
            self._local.depth = depth
            if counted:
                with self._lock:
                    self._busy -= 1
                    self._cond.notify_all()

    def _finished(self) -> None:
        with self._cond:
            self._busy -= 1
            self._cond.notify_all()

    closed = property(lambda self: self._closed, doc="Whether close() was called.")

    def close(self, cancel_futures: bool = False) -> None:
        """Refuse new calls, end open streams, wait for the calls in flight and the submitted Futures, free the session;
        twice is fine. ``cancel_futures=True`` cancels the Futures not started, as ``Executor.shutdown`` does."""
        with self._cond:
            first, self._closed = not self._closed, True
            for req in (r for r in self._requests if r.stream):  # a stream nobody reads holds its call open
                req.dropped.set()
            executor = self._executor
        if getattr(self._local, "cancelling", False):  # a done-callback of a Future that close() cancels: that one waits
            return
        if cancel_futures and executor is not None:
            self._cancel_queued(executor)
        if threading.get_ident() == self._worker:
            # a Future's done-callback: the Futures queued need this thread; release beside it (review: a hang)
            if first:
                threading.Thread(target=self._release, name="edgeai-close", daemon=True).start()
        else:
            # every close() waits, not only the first: a second one (another thread's, or a retry after
            # Ctrl-C interrupted the first) returned at once with calls in flight and the session held
            self._release()

    def _release(self) -> None:
        inside = 1 if getattr(self._local, "depth", 0) else 0  # close() called from within a call
        with self._cond:
            while not self._cond.wait_for(lambda: self._busy <= inside, timeout=0.5):  # polled: a notify lost to Ctrl-C
                pass
            executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=not inside)
        self.session.close()

    def __enter__(self) -> "Pipeline":
        return self

    def __exit__(self, exc_type: object, *exc: object) -> None:  # left by an error or Ctrl-C: queued Futures are dropped
        self.close(cancel_futures=exc_type is not None)


def load(
    path_or_name: str | os.PathLike,
    provider: str = "auto",
    variant: str = "auto",
    threads: int | None = None,
    strict: bool | None = None,
    device_id: int = 0,
    progress: Callable[[str], None] | None = None,
) -> Pipeline:
    """Load a model package (or a built-in model by name) for inference.

    ``provider``: ``"auto"`` (TensorRT, then CUDA, then CPU; the first that really starts),
    ``"cpu"``, ``"cuda"`` or ``"tensorrt"``. ``strict`` defaults to True for a named provider
    (raise rather than fall back) and False for ``"auto"``. ``variant``: ``"auto"`` (the fastest
    variant whose recorded accuracy meets the package's budget), or ``fp32``/``optimized``/``int8``/``fp16``/``int4``.
    ``threads``: CPU threads; by default those of the variant's fastest figure recorded on this
    CPU, else ONNX Runtime's default. ``device_id`` picks the GPU for CUDA and TensorRT."""
    if variant != "auto" and variant not in VARIANTS:
        raise InputError(f"Unknown variant {variant!r}; a variant is auto or one of {', '.join(VARIANTS)} "
                         "(`edgeai inspect PKG` lists the ones a package has).")
    if isinstance(device_id, bool) or not isinstance(device_id, (int, np.integer)) or device_id < 0:
        raise InputError(f"device_id must be a GPU's index, a whole number of at least 0; got {device_id!r}.")
    if device_id and isinstance(provider, str) and provider.strip().lower() in ("cpu", "cpuexecutionprovider"):  # as the CLI (review)
        raise InputError(f"device_id={device_id} picks a GPU, and provider={provider!r} runs on none: leave one of them out.")
    if strict is not None and not isinstance(strict, (bool, np.bool_)):  # strict="false" was True (review)
        raise InputError(f"strict is True, False or None (the default: True for a named provider); got {strict!r}.")
    check_threads(threads)  # before a first-use build
    return Pipeline(open_package(path_or_name, progress), provider, variant, strict, threads, device_id)

