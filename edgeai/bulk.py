"""Bulk inference: every image (or text line) under a folder or in a list file -> JSON lines.

    edgeai run --model PKG photos/ --out results.jsonl [--batch-size 16] [--workers 2]

- Decoding and preprocessing run on worker threads (Pillow releases the GIL while it decodes
  and resizes) while the main thread runs the model on the previous batch, so on a small CPU
  the decoder and ONNX Runtime's threads are busy at the same time instead of in turn.
- Each result is one JSON line: ``{"input", ...result, "model", "variant", "provider"}``, where
  ``model`` is the package name and the variant file's sha256 prefix (``"tiny@3f2a9c1d0b7e"``); an
  input that fails is ``{"input", "error", "model"}`` and the run goes on. A text line read from
  a file has ``"input": "<path>:<line>"`` and ``"text"``.
- Resumable: inputs already in the output are skipped and the rest appended; a line whose input
  changed since (a text file's line edited, an image file modified: image lines record its
  ``modified`` time) is dropped and its input redone, and so is a text file's line past its new
  end (another run's lines, a deleted image's, are kept). Every batch is
  written with one ``write`` and flushed, so a crash can tear at most the last line, and that
  line is cut off (and its input redone) on the next run. A file written by another model or
  variant (or by an edgeai that did not record the model) is refused, untouched; with
  ``retry_errors`` the error lines of this run's inputs are dropped (the file is rewritten
  atomically) and those inputs run again.
- ``--out results.parquet``: the same lines go to the journal ``results.parquet.jsonl`` (which
  keeps the run resumable: a Parquet file cannot be appended to), and the Parquet file is
  written from the whole journal at the end, atomically.
"""

from __future__ import annotations

import collections
import json
import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import numpy as np

from .errors import EdgeAIError, InputError, unreadable, warn_user
from .journal import exclusive, modified, pending, record_line, stamp
from .preprocess import decode_workers, image_files
from .tasks import takes_arrays
from .text import check_text, recording_cuts, refused_texts, truncation_warning
from .text_inputs import TEXT_SUFFIXES, TextLine, expand_text_inputs, input_fields, read_text_lines

LIST_SUFFIXES = set(TEXT_SUFFIXES)
Progress = Callable[[int, int], None]


# -- what to run on ------------------------------------------------------------------------------
def list_inputs(sources: Iterable[str], text: bool, literal: bool = False) -> list[str]:
    """The inputs named by ``sources``, in a stable order.

    Image models: a folder gives every image file under it (sorted, recursively); a ``.txt``/
    ``.lst`` file is a list of image paths, one per line (relative ones are relative to the
    list; spaces around a path are ignored, and so are lines starting with ``#``); anything else
    is one image path. Text models: :func:`edgeai.text_inputs.expand_text_inputs`
    (a file gives its lines, a folder the lines of its ``.txt`` files, anything else is one text;
    ``literal=True``: every source is a text). A file (or a file's line) named twice is listed once.
    """
    if text:
        from .text import numpy_texts

        sources = numpy_texts(sources)  # a Series or array of texts is a list; a DataFrame (its column names) is refused
        # lines of files once each (see below); a text typed twice stays twice: two samples of one prompt
        return _once(expand_text_inputs(list(sources), literal), lambda t: os.path.abspath(t.input) if isinstance(t, TextLine) else None)
    items: list[str] = []
    for src in sources:
        path = Path(src)
        if unreadable(path):  # is_dir() would raise: one input, whose error line open_image writes
            items.append(src)
        elif path.is_dir():
            items.extend(str(p) for p in image_files(path, unreadable=True))
        elif path.is_file() and path.suffix.lower() in LIST_SUFFIXES:
            paths = [line.strip() for line in read_text_lines(path) if not line.lstrip().startswith("#")]
            # a web address stays as written ("https:/..." once joined), for open_image's sentence on it
            items.extend(line if os.path.isabs(line) or "://" in line else str(path.parent / line) for line in paths)
        else:
            items.append(src)
    # Each input once (the first time it is named): a file named again, or inside a folder also
    # named, wrote a second line of the same "input", which breaks a join on it (review).
    return _once(items, os.path.abspath)


def _once(items: list, key: Callable[[Any], str | None]) -> list:
    """``items`` without the repeats of a key (a key of None is never a repeat)."""
    seen: set[str] = set()
    return [x for x in items if (k := key(x)) is None or not (k in seen or seen.add(k))]


# -- the run -------------------------------------------------------------------------------------
def run_bulk(
    pipe,
    items: list[str],
    out: str | os.PathLike,
    batch_size: int = 16,
    workers: int | None = None,
    top_k: int | None = None,
    progress: Progress | None = None,
    retry_errors: bool = False,
    new_file: bool = True,
    generate: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Answer every item not yet in ``out`` (or answered there for an input changed since); returns
    ``{"total", "skipped", "failed", "retried", "changed", "gone", "done", "errors", "first_error", "truncated",
    "seconds"}``
    (``done``: lines written by this run, errors included; ``failed``: skipped inputs whose lines
    are errors; see :func:`edgeai.journal.pending`).

    ``out`` must be new, or hold lines of this same model and variant (see :func:`edgeai.journal.done_inputs`);
    ``retry_errors`` runs again the inputs whose lines are errors, replacing those lines.
    ``new_file=False`` leaves the ``--new-file`` suggestion out of the refusal (it is in use).

    A text-generation package continues each text with ``Pipeline.generate(**generate)`` (``chat``
    and ``system`` as ``edgeai generate`` takes them); its lines record the options that differ
    from generate's defaults as ``"options"``, and a file of other options is refused, untouched."""
    if batch_size < 1:
        raise InputError("--batch-size must be at least 1.")
    options = generation_options(pipe, generate)
    pipe.check_top_k(top_k)  # before the file is touched, not as an error line per input
    if takes_arrays(pipe):  # feature-extraction & co. too, not a plugin's own preprocessing
        raise InputError("Bulk runs (--out) take images or texts; a tensor model runs its .npy/.npz files, or a folder "
                         "of them, without --out (edgeai run --model PKG DIR --json), or with Pipeline.run.")
    out = Path(out)
    tail = {**stamp(pipe), **({"options": options} if options else {})}
    with exclusive(out) as held:
        todo, stats = pending(items, out, tail["model"], pipe.variant, retry_errors, new_file, options, ranked(pipe.package, top_k))
        f = held.reopen_if_replaced()
        t0 = time.perf_counter()

        def write(records: list[dict]) -> None:
            f.write("".join(record_line(r, tail) + "\n" for r in records))
            f.flush()
            stats["done"] += len(records)
            stats["truncated"] += sum(1 for r in records if r.get("truncated"))
            failed = [r["error"] for r in records if "error" in r]
            stats["errors"] += len(failed)
            if failed and stats["first_error"] is None:
                stats["first_error"] = failed[0]
            if progress:
                progress(stats["done"], len(todo))

        if progress:
            progress(0, len(todo))
        for records in result_batches(pipe, todo, batch_size, workers, top_k, options):
            write(records)
        os.fsync(f.fileno())
    stats["seconds"] = time.perf_counter() - t0
    return stats


def ranked(pkg, top_k: int | None) -> int | None:
    """How many classes a classifier's result line lists with ``top_k`` (None: the package's own), which a
    resumed file must match; None where not known (not a classifier, an output of unnamed width)."""
    spec = pkg.manifest.get("postprocess", {})
    if spec.get("type") != "classification":
        return None
    name = spec.get("output") or pkg.manifest["outputs"][0]["name"]
    width = (next((o.get("shape") for o in pkg.manifest["outputs"] if o["name"] == name), None) or [None])[-1]
    return min(top_k or spec.get("top_k", 5), width) if isinstance(width, int) else None


def result_batches(pipe, todo: list, batch_size: int, workers: int | None, top_k: int | None,
                   options: dict[str, Any]) -> Iterator[list[dict]]:
    """The result lines of ``todo``, a batch at a time, as the package takes its inputs: prompts
    continued (``options``: :func:`generation_options`), texts, or images. run_bulk's and the Ray
    workers' one dispatch."""
    if "generation" in pipe.package.manifest:
        return _generations(pipe, todo, batch_size, options)
    if pipe.is_text:
        return _text_batches(pipe, todo, batch_size, top_k)
    return _image_batches(pipe, todo, batch_size, workers, top_k)


def _image_batches(pipe, todo: list[str], batch_size: int, workers: int | None, top_k: int | None) -> Iterator[list[dict]]:
    """Preprocess on ``workers`` threads, a few batches ahead; run each batch as it is ready."""
    def prepare(item: str):
        try:
            return pipe.preprocess([item])  # the feed of one item; a batch joins them
        except EdgeAIError as e:
            return e
        except MemoryError:  # one huge file gets its error line; the run goes on
            return InputError(f"Image {item} needs more memory to decode than this machine has free.")

    workers = workers or decode_workers()
    ahead = batch_size * 3
    with ThreadPoolExecutor(workers, thread_name_prefix="edgeai-decode") as pool:
        pending = collections.deque()
        it = iter(todo)
        for item in it:
            pending.append((item, pool.submit(prepare, item)))
            if len(pending) >= ahead:
                break
        while pending:
            batch = [pending.popleft() for _ in range(min(batch_size, len(pending)))]
            for item in it:  # keep the decoders busy while this batch runs
                pending.append((item, pool.submit(prepare, item)))
                if len(pending) >= ahead:
                    break
            records: list[dict] = [{} for _ in batch]
            arrays, good = [], []
            for i, (item, fut) in enumerate(batch):
                x = fut.result()
                head = {"input": item, "modified": modified(item)} if isinstance(item, str) else {"input": item}
                if isinstance(x, EdgeAIError):
                    records[i] = {**head, "error": str(x)}
                else:
                    arrays.append(x)
                    good.append(i)
                    records[i] = head
            if good:
                feed = {k: np.concatenate([a[k] for a in arrays]) for k in arrays[0]}
                results = pipe.postprocess(pipe._run_batch(feed), top_k)  # a dynamic INT8 variant one row per call (edgeai.rows)
                for i, r in zip(good, results):
                    records[i] = {**records[i], **r}
            yield records


def generation_options(pipe, options: dict[str, Any] | None) -> dict[str, Any]:
    """The generation options of a bulk run that differ from ``Pipeline.generate``'s defaults
    (what its lines record), checked as ``Pipeline.submit`` checks them; {} for other models."""
    import inspect

    from .generation import check_request

    options = dict(options or {})
    if "generation" not in pipe.package.manifest:
        if options:
            raise InputError(f"{pipe.name} is a {pipe.task} package; generation options need a text-generation one.")
        return {}
    chat, system = bool(options.pop("chat", False)), options.pop("system", None)
    if system is not None and not chat:
        raise InputError("system goes with chat=True (--system with --chat).")
    if said := [k for k in ("stream", "cancel", "stats") if k in options]:  # of a call, not of the results a file holds
        raise InputError(f"A bulk run writes whole results to its file: {', '.join(said)} is for Pipeline.generate.")
    check_request(pipe, options)
    if isinstance(options.get("stop"), str):
        options["stop"] = [options["stop"]]  # one stop string or a list of one: the same run
    defaults = {k: p.default for k, p in inspect.signature(pipe.generate).parameters.items()}
    given = {k: v for k, v in options.items() if v != defaults[k] and not (k == "stop" and not v)}
    given.update({"chat": True, **({"system": system} if system is not None else {})} if chat else {})
    # as the lines hold them (a tuple of stop strings reads back as a list), for the resume check
    return json.loads(json.dumps(given))


def _generations(pipe, todo: list[str], batch_size: int, options: dict[str, Any]) -> Iterator[list[dict]]:
    """Each prompt continued on its own (generation runs one sequence at a time), written in
    batches of ``batch_size`` lines; a prompt that fails is its own error line."""
    from .chat import as_user

    call = {k: v for k, v in options.items() if k not in ("chat", "system")}
    for start in range(0, len(todo), batch_size):
        records = []
        for t in todo[start : start + batch_size]:
            try:
                r = pipe.generate(as_user(check_text(t), options.get("system")) if options.get("chat") else t, **call)
                records.append(_text_line(t, r, True))
            except EdgeAIError as e:
                records.append(_error_line(t, e, True))
        yield records


def _text_batches(pipe, todo: list[str], batch_size: int, top_k: int | None) -> Iterator[list[dict]]:
    """Tokenizing is fast and batch-wise; a batch with a bad text is redone text by text."""
    for start in range(0, len(todo), batch_size):
        chunk = todo[start : start + batch_size]
        records: list[dict] = [{} for _ in chunk]
        good = []
        for i, t in enumerate(chunk):
            try:
                check_text(t)
                good.append(i)
            except EdgeAIError as e:
                records[i] = _error_line(t, e)
        try:  # a cut text is marked on its line ("truncated": true), not printed
            for i, r in zip(good, _predict_marked(pipe, [chunk[i] for i in good], top_k) if good else []):
                records[i] = _text_line(chunk[i], r)
        except EdgeAIError:
            for i in good:
                try:
                    records[i] = _text_line(chunk[i], _predict_marked(pipe, [chunk[i]], top_k)[0])
                except EdgeAIError as e:
                    records[i] = _error_line(chunk[i], e)
        yield records


def _predict_marked(pipe, texts: list, top_k: int | None) -> list[dict]:
    """``pipe.predict(texts)``, the result of each text cut to the model's length marked
    ``"truncated"`` instead of warned of (the caller counts them); other warnings pass on."""
    with recording_cuts(quiet=True) as cuts:  # this thread's cuts only: other threads' calls and warnings untouched
        got = pipe.predict(texts, top_k=top_k)  # tokenized together, in length-sorted chunks
    for n in {n for cut in cuts for n in cut}:
        got[n]["truncated"] = True
    return got


def _text_line(item, result: dict, generates: bool = False) -> dict:
    """A text's line: its input fields, then the result. A generation's ``text`` is the
    continuation, so a prompt read from a file keeps its line as ``prompt`` (what a resumed run
    compares, to redo an edited prompt), in its error lines too."""
    return {**input_fields(item, prompt=generates), **result}


def _error_line(item, e: EdgeAIError, generates: bool = False) -> dict:
    return {**input_fields(item, prompt=generates), "error": str(e)}


def predict_each(pipe, inputs: list[Any], top_k: int | None = None) -> list[dict]:
    """:meth:`edgeai.pipeline.Pipeline.predict_each`: one result or one error sentence per input, the
    inputs that pass their checks run together."""
    pipe.check_top_k(top_k)  # once, not as an error per input
    from ._submit import _a_stream

    if pipe.is_text:  # a numpy array or pandas Series of texts is a list of them, as predict() reads it
        from .text import numpy_texts

        inputs = numpy_texts(inputs)
    # a lone string is one input, not its letters; a generator is its inputs
    inputs = list(inputs) if isinstance(inputs, (list, tuple)) or _a_stream(inputs) else [inputs]
    labels = [str(x) if isinstance(x, (str, os.PathLike)) else f"{'array' if isinstance(x, np.ndarray) else 'input'}[{i}]"
              for i, x in enumerate(inputs)]
    if "generation" in pipe.package.manifest:
        return [_each_prompt(pipe, x, label) for x, label in zip(inputs, labels)]
    if pipe._pre is None:
        return [_each_tensor(pipe, x, label, top_k) for x, label in zip(inputs, labels)]
    heads = [input_fields(x, label) for x, label in zip(inputs, labels)]
    results: list[dict] = [{} for _ in inputs]
    good, feeds = [], []
    for i, x in enumerate(inputs):
        try:
            feeds.append(_checked(pipe, x, i, len(inputs)))
            good.append(i)
        except EdgeAIError as e:
            results[i] = {**heads[i], "error": str(e)}
    if good:
        if pipe.is_text:
            got = _each_text(pipe, feeds, top_k)
        else:
            got = pipe.postprocess(pipe._run_batch({k: np.concatenate([f[k] for f in feeds]) for k in feeds[0]}), top_k)
        for i, r in zip(good, got):
            results[i] = {**heads[i], **r}
    return results


EACH_SLICE = 1024  # texts tokenized at once by predict_each: 50,000 lines at once held 1 GB of encodings (review)


def _each_text(pipe, texts: list, top_k: int | None) -> list[dict]:
    """The texts' results, a slice at a time; a cut text is marked ``"truncated"`` on its result,
    as on a bulk line, and one warning counts them all, as predict's does."""
    results = [r for start in range(0, len(texts), EACH_SLICE) for r in _text_slice(pipe, texts[start : start + EACH_SLICE], top_k)]
    if cut := [i for i, r in enumerate(results) if r.get("truncated")]:
        warn_user(truncation_warning(cut, texts[cut[0]], int(pipe.package.manifest["preprocess"]["max_length"])))
    return results


def _text_slice(pipe, texts: list, top_k: int | None) -> list[dict]:
    try:
        return _predict_marked(pipe, texts, top_k)
    except InputError:  # the tokenizer refused one (every token unknown): find it, batch the rest
        refused = refused_texts(pipe.preprocess, texts)
    kept = [i for i in range(len(texts)) if i not in refused]
    try:
        rest = _predict_marked(pipe, [texts[i] for i in kept], top_k) if kept else []
    except InputError:  # ... and the session one (an id past the embedding's rows): each runs alone (review)
        alone = refused_texts(lambda one: pipe.predict(one, top_k=top_k), [texts[i] for i in kept])
        refused.update({kept[j]: why for j, why in alone.items()})
        kept = [i for i in kept if i not in refused]
        rest = _predict_marked(pipe, [texts[i] for i in kept], top_k) if kept else []
    got = dict(zip(kept, rest))
    return [got[i] if i in got else {"error": refused[i]} for i in range(len(texts))]


def _each_prompt(pipe, x: Any, label: str) -> dict:
    try:
        return {**input_fields(x, label, prompt=True), **pipe.generate(x)}
    except EdgeAIError as e:
        return {**input_fields(x, label, prompt=True), "error": str(e)}


def _checked(pipe, x: Any, index: int, total: int) -> Any:
    """A text checked alone (the message says which one), or an image's one-item feed."""
    if pipe.is_text:  # the item itself goes on: predict takes a pair as the dict, not check_text's tuple (review)
        check_text(x, index, total)
        return x
    return pipe.preprocess([x])


def _each_tensor(pipe, x: Any, label: str, top_k: int | None) -> dict:
    try:
        return {"input": label, **pipe.predict(x, top_k=top_k)}
    except EdgeAIError as e:
        return {"input": label, "error": str(e)}
