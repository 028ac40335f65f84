"""Bulk inference: every image (or text line) under a folder or in a list file -> JSON lines.

    edgeai run --model PKG photos/ --out results.jsonl [--batch-size 16] [--workers 2]

- Decoding and preprocessing run on worker threads (Pillow releases the GIL while it decodes
  and resizes) while the main thread runs the model on the previous batch, so on a small CPU
  the decoder and ONNX Runtime's threads are busy at the same time instead of in turn.
- Each result is one JSON line: ``{"input", ...result, "model", "variant", "provider"}``, where
  ``model`` is the package name and the variant file's sha256 prefix (``"tiny@3f2a9c1d0b7e"``); an
  input that fails is ``{"input", "error", "model"}`` and the run goes on. A text line read from
  a file has ``"input": "<path>:<line>"`` and ``"text"``.
- Resumable: inputs already in the output are skipped and the rest appended. Every batch is
  written with one ``write`` and flushed, so a crash can tear at most the last line, and that
  line is cut off (and its input redone) on the next run. A file written by another model or
  variant (or by an edgeai that did not record the model) is refused, untouched; with
  ``retry_errors`` the error lines are dropped (the file is rewritten atomically) and their
  inputs run again.
- ``--out results.parquet``: the same lines go to the journal ``results.parquet.jsonl`` (which
  keeps the run resumable: a Parquet file cannot be appended to), and the Parquet file is
  written from the whole journal at the end, atomically.
"""

from __future__ import annotations

import collections
import json
import os
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import numpy as np

from .atomic import _fsync_dir
from .errors import DependencyError, EdgeAIError, InputError
from .postprocess import to_jsonable
from .text import TEXT_SUFFIXES, expand_text_inputs, input_fields

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".gif", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".jfif"}
LIST_SUFFIXES = set(TEXT_SUFFIXES)
Progress = Callable[[int, int], None]


# -- what to run on ------------------------------------------------------------------------------
def _lines(path: Path) -> Iterator[str]:
    with open(path, encoding="utf-8-sig", errors="surrogateescape", newline=None) as f:  # -sig: a BOM is not text
        for line in f:
            line = line.rstrip("\n")
            if line.strip():
                yield line


def list_inputs(sources: Iterable[str], text: bool, literal: bool = False) -> list[str]:
    """The inputs named by ``sources``, in a stable order.

    Image models: a folder gives every image file under it (sorted, recursively); a ``.txt``/
    ``.lst`` file is a list of image paths, one per line (relative ones are relative to the
    list; spaces around a path are ignored, and so are lines starting with ``#``); anything else
    is one image path. Text models: :func:`edgeai.text.expand_text_inputs`
    (a file gives its lines, a folder the lines of its ``.txt`` files, anything else is one text;
    ``literal=True``: every source is a text).
    """
    if text:
        return expand_text_inputs(list(sources), literal)
    items: list[str] = []
    for src in sources:
        path = Path(src)
        if path.is_dir():
            items.extend(str(p) for p in sorted(path.rglob("*")) if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        elif path.is_file() and path.suffix.lower() in LIST_SUFFIXES:
            paths = [line.strip() for line in _lines(path) if not line.lstrip().startswith("#")]
            items.extend(line if os.path.isabs(line) else str(path.parent / line) for line in paths)
        else:
            items.append(src)
    return items


# -- the output file -----------------------------------------------------------------------------
def model_id(pkg, variant: str) -> str:
    """What a bulk line says made it: the package name and the variant file's sha256 prefix."""
    return f"{pkg.name}@{pkg.variants[variant]['sha256'][:12]}"


def stamp(pipe) -> dict[str, str]:
    """The fields every result line of this pipeline ends with."""
    return {"model": model_id(pipe.package, pipe.variant), "variant": pipe.variant, "provider": pipe.provider}


def record_line(record: dict, tail: dict[str, str]) -> str:
    """One JSON line (no newline): a result gets ``model``/``variant``/``provider``, an error
    line ``model`` alone. The single-machine and the Ray path both write through this."""
    return _dumps({**record, "model": tail["model"]} if "error" in record else {**record, **tail})


def new_file_for(out: str | os.PathLike, name: str, variant: str) -> Path:
    """The file ``--new-file`` writes beside ``out``: ``results.<model>-<variant>.jsonl``."""
    out = Path(out)
    tag = "".join(c if c.isalnum() or c in "._-" else "_" for c in f"{name}-{variant}")
    journal = out.name.lower().endswith(".parquet.jsonl")
    base, suffix = (out.name[: -len(".parquet.jsonl")], out.name[-len(".parquet.jsonl"):]) if journal else (out.stem, out.suffix)
    return out.with_name(f"{base}.{tag}{suffix}")


def _refusal(out: Path, line: dict, model: str, variant: str | None, new_file: bool) -> str:
    """The one sentence that refuses to resume into a file another model (or variant) wrote."""
    name = model.split("@")[0]
    this = f"{model} ({variant})" if variant else model
    side = new_file_for(out, name, variant or "auto").name
    side = side[: -len(".jsonl")] if out.name.lower().endswith(".parquet.jsonl") else side  # name the table, not its journal
    way = f"give another --out file, or pass --new-file to write {side} beside it"
    if not new_file:
        way = "give another --out file"
    if "model" not in line:
        return (f"{out} was written without the model in its lines (by an older edgeai), so resuming it with {this} "
                f"cannot be checked: {way}.")
    held = f"{line['model']} ({line['variant']})" if "variant" in line else line["model"]
    return f"{out} holds results of {held}, not of this run's {this}: {way}."


def done_inputs(out: Path, model: str | None = None, variant: str | None = None, retry_errors: bool = False,
                new_file: bool = True) -> tuple[collections.Counter, int]:
    """Inputs already answered in ``out`` (counted, so repeated inputs are redone only as often
    as they are missing), and how many error lines were dropped (``retry_errors``).

    With ``model``, a line of another model (or one without ``model``) refuses the file before
    anything in it changes; then a torn last line is cut off, and with ``retry_errors`` the
    error lines are removed (rewritten to a temporary file, then renamed)."""
    done: collections.Counter = collections.Counter()
    if not out.exists():
        return done, 0
    if out.is_dir():
        raise InputError(f"--out {out} is a directory; give a .jsonl file name.")
    errors = 0
    with open(out, "rb") as f:
        for n, line in enumerate(f, 1):
            if not line.endswith(b"\n"):
                break  # a torn last line: cut off below
            try:
                rec = json.loads(line)
                key = rec["input"]
            except (ValueError, KeyError, TypeError):
                raise InputError(f"{out} line {n} is not an edgeai result; give another --out file.") from None
            if model is not None and rec.get("model") != model:
                raise InputError(_refusal(out, rec, model, variant, new_file))
            if retry_errors and "error" in rec:
                errors += 1
            else:
                done[key] += 1
    _cut_torn_tail(out)
    if errors:
        _drop_error_lines(out)
    return done, errors


def _drop_error_lines(out: Path) -> None:
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    try:
        with open(out, "rb") as src, open(tmp, "wb") as dst:
            for line in src:
                if b'"error"' not in line or "error" not in json.loads(line):
                    dst.write(line)
            dst.flush()
            os.fsync(dst.fileno())
        os.replace(tmp, out)
        _fsync_dir(out.parent)
    finally:
        tmp.unlink(missing_ok=True)


def pending(items: list[str], out: Path, model: str | None = None, variant: str | None = None,
            retry_errors: bool = False, new_file: bool = True) -> tuple[list[str], dict[str, Any]]:
    """The items ``out`` does not answer yet, and the run's opening figures (``total``,
    ``skipped``, ``retried``); see :func:`done_inputs` for the checks on ``out``."""
    if not out.parent.is_dir():
        raise InputError(f"The directory of --out ({out.parent}) does not exist.")
    already, retried = done_inputs(out, model, variant, retry_errors, new_file)
    todo: list[str] = []
    for item in items:
        key = input_fields(item)["input"]
        if already[key] > 0:
            already[key] -= 1
        else:
            todo.append(item)
    stats: dict[str, Any] = {"total": len(items), "skipped": len(items) - len(todo), "retried": retried, "done": 0,
                             "errors": 0, "first_error": None}
    return todo, stats


def _cut_torn_tail(out: Path) -> None:
    with open(out, "rb+") as f:
        f.seek(0, os.SEEK_END)
        size = f.tell()
        if size == 0:
            return
        pos = size
        while pos > 0:
            step = min(1 << 16, pos)
            f.seek(pos - step)
            chunk = f.read(step)
            nl = chunk.rfind(b"\n")
            if nl >= 0:
                end = pos - step + nl + 1
                break
            pos -= step
        else:
            end = 0
        if end != size:
            f.truncate(end)


def _dumps(record: dict) -> str:
    # ensure_ascii keeps undecodable input names (surrogates) writable; json reads them back alike
    return json.dumps(to_jsonable(record), ensure_ascii=True)


def journal_for(out: str | os.PathLike) -> Path:
    """Where the JSON lines go: ``out`` itself, or ``out.jsonl`` beside a ``.parquet`` output."""
    out = Path(out)
    return out.with_name(out.name + ".jsonl") if out.suffix.lower() == ".parquet" else out


def _printable(value: Any) -> Any:
    """Parquet strings are UTF-8: an undecodable file name (kept as surrogates) becomes \\xNN text."""
    if isinstance(value, str):
        return value.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    if isinstance(value, dict):
        return {k: _printable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_printable(v) for v in value]
    return value


def write_parquet(journal: str | os.PathLike, out: str | os.PathLike) -> int:
    """Every line of the journal as one Parquet row (written to a temporary name, then renamed).

    Columns are the union of the lines' keys, so error lines (``input``, ``error``) and result
    lines share one table; ``top_k`` becomes a list of structs and ``embedding`` a list of floats.
    """
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise DependencyError("Writing Parquet needs pyarrow (pip install pyarrow; the ray extra includes it), "
                              "or write JSON lines with --out FILE.jsonl.") from None
    rows = [_printable(json.loads(line)) for line in _lines(Path(journal))] if Path(journal).exists() else []
    keys = list(dict.fromkeys(k for r in rows for k in r)) or ["input"]
    try:
        table = pa.table({k: [r.get(k) for r in rows] for k in keys})
    except pa.ArrowException as e:
        raise InputError(f"The results in {journal} do not fit one Parquet table ({str(e).splitlines()[0][:200]}); "
                         "keep the JSON lines.") from None
    out = Path(out)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    try:
        pq.write_table(table, tmp)
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return table.num_rows


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
) -> dict[str, Any]:
    """Answer every item not yet in ``out``; returns ``{"total", "skipped", "retried", "done",
    "errors", "first_error", "seconds"}`` (``done``: lines written by this run, errors included).

    ``out`` must be new, or hold lines of this same model and variant (see :func:`done_inputs`);
    ``retry_errors`` runs again the inputs whose lines are errors, replacing those lines.
    ``new_file=False`` leaves the ``--new-file`` suggestion out of the refusal (it is in use)."""
    if batch_size < 1:
        raise InputError("--batch-size must be at least 1.")
    if pipe.task == "tensor":
        raise InputError("Bulk runs (--out) take images or texts; a tensor model runs its .npy/.npz files, or a folder "
                         "of them, without --out (edgeai run --model PKG DIR --json), or with Pipeline.run.")
    out = Path(out)
    tail = stamp(pipe)
    todo, stats = pending(items, out, tail["model"], pipe.variant, retry_errors, new_file)
    t0 = time.perf_counter()
    with open(out, "a", encoding="utf-8") as f:
        def write(records: list[dict]) -> None:
            f.write("".join(record_line(r, tail) + "\n" for r in records))
            f.flush()
            stats["done"] += len(records)
            failed = [r["error"] for r in records if "error" in r]
            stats["errors"] += len(failed)
            if failed and stats["first_error"] is None:
                stats["first_error"] = failed[0]
            if progress:
                progress(stats["done"], len(todo))

        if progress:
            progress(0, len(todo))
        batches = _text_batches(pipe, todo, batch_size, top_k) if pipe.is_text else _image_batches(pipe, todo, batch_size, workers, top_k)
        for records in batches:
            write(records)
        os.fsync(f.fileno())
    stats["seconds"] = time.perf_counter() - t0
    return stats


def _image_batches(pipe, todo: list[str], batch_size: int, workers: int | None, top_k: int | None) -> Iterator[list[dict]]:
    """Preprocess on ``workers`` threads, a few batches ahead; run each batch as it is ready."""
    def prepare(item: str):
        try:
            return pipe.preprocess([item])  # the feed of one item; a batch joins them
        except EdgeAIError as e:
            return e

    workers = workers or min(4, os.cpu_count() or 1)
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
                if isinstance(x, EdgeAIError):
                    records[i] = {"input": item, "error": str(x)}
                else:
                    arrays.append(x)
                    good.append(i)
            if good:
                feed = {k: np.concatenate([a[k] for a in arrays]) for k in arrays[0]}
                results = pipe.postprocess(pipe.run(feed), top_k)
                for i, r in zip(good, results):
                    records[i] = {"input": batch[i][0], **r}
            yield records


def _text_batches(pipe, todo: list[str], batch_size: int, top_k: int | None) -> Iterator[list[dict]]:
    """Tokenizing is fast and batch-wise; a batch with a bad text is redone text by text."""
    from .text import check_text

    for start in range(0, len(todo), batch_size):
        chunk = todo[start : start + batch_size]
        records: list[dict] = [{} for _ in chunk]
        good = []
        for i, t in enumerate(chunk):
            try:
                check_text(t)
                good.append(i)
            except EdgeAIError as e:
                records[i] = {**input_fields(t), "error": str(e)}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # truncation is expected in bulk; the record says nothing else
            try:
                results = pipe.predict([chunk[i] for i in good], top_k) if good else []
                for i, r in zip(good, results):
                    records[i] = {**input_fields(chunk[i]), **r}
            except EdgeAIError:
                for i in good:
                    try:
                        records[i] = {**input_fields(chunk[i]), **pipe.predict(chunk[i], top_k)}
                    except EdgeAIError as e:
                        records[i] = {**input_fields(chunk[i]), "error": str(e)}
        yield records
