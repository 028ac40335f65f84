"""Bulk inference: every image (or text line) under a folder or in a list file -> JSON lines.

    edgeai run --model PKG photos/ --out results.jsonl [--batch-size 16] [--workers 2]

- Decoding and preprocessing run on worker threads (Pillow releases the GIL while it decodes
  and resizes) while the main thread runs the model on the previous batch, so on a small CPU
  the decoder and ONNX Runtime's threads are busy at the same time instead of in turn.
- Each result is one JSON line: ``{"input", ...result, "variant", "provider"}``; an input that
  fails is ``{"input", "error"}`` and the run goes on.
- Resumable: inputs already in the output are skipped and the rest appended. Every batch is
  written with one ``write`` and flushed, so a crash can tear at most the last line, and that
  line is cut off (and its input redone) on the next run.
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

from .errors import DependencyError, EdgeAIError, InputError
from .postprocess import to_jsonable

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".gif", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".jfif"}
LIST_SUFFIXES = {".txt", ".lst", ".list"}
Progress = Callable[[int, int], None]


# -- what to run on ------------------------------------------------------------------------------
def _lines(path: Path) -> Iterator[str]:
    with open(path, encoding="utf-8", errors="surrogateescape", newline=None) as f:
        for line in f:
            line = line.rstrip("\n")
            if line.strip():
                yield line


def list_inputs(sources: Iterable[str], text: bool) -> list[str]:
    """The inputs named by ``sources``, in a stable order.

    Image models: a folder gives every image file under it (sorted, recursively); a ``.txt``/
    ``.lst`` file is a list of image paths, one per line (relative ones are relative to the
    list); anything else is one image path. Text models: a folder gives every line of every
    ``.txt`` file under it; a ``.txt`` file gives its lines; anything else is one text.
    """
    items: list[str] = []
    for src in sources:
        path = Path(src)
        if path.is_dir():
            if text:
                for f in sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in LIST_SUFFIXES):
                    items.extend(_lines(f))
            else:
                items.extend(str(p) for p in sorted(path.rglob("*")) if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        elif path.is_file() and path.suffix.lower() in LIST_SUFFIXES:
            if text:
                items.extend(_lines(path))
            else:
                items.extend(line if os.path.isabs(line) else str(path.parent / line) for line in _lines(path))
        else:
            items.append(src)
    return items


# -- the output file -----------------------------------------------------------------------------
def done_inputs(out: Path) -> collections.Counter:
    """Inputs already answered in ``out`` (counted, so repeated texts are redone only as often as
    they are missing); a torn last line is cut off first."""
    done: collections.Counter = collections.Counter()
    if not out.exists():
        return done
    if out.is_dir():
        raise InputError(f"--out {out} is a directory; give a .jsonl file name.")
    _cut_torn_tail(out)
    with open(out, encoding="utf-8", errors="surrogateescape") as f:
        for n, line in enumerate(f, 1):
            try:
                done[json.loads(line)["input"]] += 1
            except (ValueError, KeyError, TypeError):
                raise InputError(f"{out} line {n} is not an edgeai result; give another --out file.") from None
    return done


def pending(items: list[str], out: Path) -> tuple[list[str], dict[str, Any]]:
    """The items ``out`` does not answer yet, and the run's opening figures (``total``, ``skipped``)."""
    if not out.parent.is_dir():
        raise InputError(f"The directory of --out ({out.parent}) does not exist.")
    already = done_inputs(out)
    todo: list[str] = []
    for item in items:
        if already[item] > 0:
            already[item] -= 1
        else:
            todo.append(item)
    stats: dict[str, Any] = {"total": len(items), "skipped": len(items) - len(todo), "done": 0, "errors": 0,
                             "first_error": None}
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
) -> dict[str, Any]:
    """Answer every item not yet in ``out``; returns ``{"total", "skipped", "done", "errors",
    "first_error", "seconds"}`` (``done``: lines written by this run, errors included)."""
    if batch_size < 1:
        raise InputError("--batch-size must be at least 1.")
    if pipe.task == "tensor":
        raise InputError("Bulk runs take images or texts; a tensor model is run with Pipeline.run or .npz files.")
    out = Path(out)
    todo, stats = pending(items, out)
    t0 = time.perf_counter()
    tail = {"variant": pipe.variant, "provider": pipe.provider}
    with open(out, "a", encoding="utf-8") as f:
        def write(records: list[dict]) -> None:
            f.write("".join(_dumps(r) + "\n" for r in records))
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
            write([{**r, **tail} if "error" not in r else r for r in records])
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
                records[i] = {"input": t, "error": str(e)}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # truncation is expected in bulk; the record says nothing else
            try:
                results = pipe.predict([chunk[i] for i in good], top_k) if good else []
                for i, r in zip(good, results):
                    records[i] = {"input": chunk[i], **r}
            except EdgeAIError:
                for i in good:
                    try:
                        records[i] = {"input": chunk[i], **pipe.predict(chunk[i], top_k)}
                    except EdgeAIError as e:
                        records[i] = {"input": chunk[i], "error": str(e)}
        yield records
