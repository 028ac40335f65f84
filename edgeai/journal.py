"""The output file of a bulk run: JSON lines, resumable, stamped with the model that wrote them
(see :mod:`edgeai.bulk` for the run itself), and the Parquet table written from them."""

from __future__ import annotations

import collections
import contextlib
import json
import os
from pathlib import Path
from typing import Any, Callable, Iterator, TextIO

from .atomic import _fsync_dir, through_link
from .errors import DependencyError, InputError, shell_arg
from .postprocess import to_jsonable
from .text_inputs import input_fields


def nonblank_lines(path: Path) -> Iterator[str]:
    """The lines of a result file that hold more than whitespace, without their newlines, as
    they are read (a user's text file goes through edgeai.text_inputs.read_text_lines, which checks it)."""
    with open(path, encoding="utf-8-sig", errors="surrogateescape", newline=None) as f:  # -sig: a BOM is not text
        for line in f:
            line = line.rstrip("\n")
            if line.strip():
                yield line


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


def _options_text(options: dict | None) -> str:
    """``--max-new-tokens 200 --temperature 0.7``, as ``edgeai generate`` takes them, for a
    refusal; none: the defaults, said as such."""
    if not options:
        return "the default options (greedy, 64 new tokens)"
    flags = []
    for k, v in options.items():
        for one in v if isinstance(v, list) else [v]:  # --stop is repeated
            flags.append(f"--{k.replace('_', '-')}" + ("" if one is True else f" {shell_arg(one)}"))
    return " ".join(flags)


def done_inputs(out: Path, model: str | None = None, variant: str | None = None, retry_errors: bool = False,
                new_file: bool = True, stale: Callable[[dict], str | None] | None = None,
                mine: Callable[[str], bool] | None = None,
                options: dict | None = None, ranks: int | None = None) -> tuple[collections.Counter, collections.Counter, dict[str, int]]:
    """Inputs already answered in ``out`` (counted, so repeated inputs are redone only as often
    as they are missing), those of them answered by an error line, and how many lines were
    dropped, by why: ``retried`` (error lines, with ``retry_errors``, of inputs that ``mine``
    says this run has), or what ``stale(line)`` says: ``changed`` (the input changed since) or
    ``gone`` (a line of a text file that has fewer lines now).
    ``out`` is a file (:func:`exclusive` checked it).

    With ``model``, a line of another model (or one without ``model``), or a generation's result
    line of other ``options`` (none recorded: the defaults), or a classifier's of other than ``ranks`` classes, refuses the file before anything in it changes; then a torn last line is cut off, and the dropped lines are removed
    (rewritten to a temporary file, then renamed)."""
    done: collections.Counter = collections.Counter()
    failed: collections.Counter = collections.Counter()
    dropped = {"retried": 0, "changed": 0, "gone": 0}
    if not out.exists():
        return done, failed, dropped
    drop = set()
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
            if model is not None and "finish_reason" in rec and rec.get("options", {}) != (options or {}):
                raise InputError(f"{out} holds continuations made with {_options_text(rec.get('options'))}, and this run "
                                 f"asks for {_options_text(options)}: give another --out file, or resume it with "
                                 "edgeai generate and the options it was made with.")
            if ranks is not None and isinstance(rec.get("top_k"), list) and len(rec["top_k"]) != ranks:  # review: mixed silently
                raise InputError(f"{out} holds results of {len(rec['top_k'])} classes each, and this run asks for {ranks}: give "
                                 f"another --out file, or resume it with --top-k {len(rec['top_k'])}.")
            if retry_errors and "error" in rec and (mine is None or mine(key)):
                why = "retried"
            else:
                why = stale(rec) if stale is not None else None
            if why is not None:
                dropped[why] += 1
                drop.add(n)
            else:
                done[key] += 1
                failed[key] += "error" in rec
    _cut_torn_tail(out)
    if drop:
        _drop_lines(out, drop)
    return done, failed, dropped


def _drop_lines(out: Path, numbers: set[int]) -> None:
    out = through_link(out)  # a symlinked --out is rewritten where it points, not replaced by a file (review)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    try:
        with open(out, "rb") as src, open(tmp, "wb") as dst:
            for n, line in enumerate(src, 1):
                if n not in numbers:
                    dst.write(line)
            dst.flush()
            os.fsync(dst.fileno())
        os.replace(tmp, out)
        _fsync_dir(out.parent)
    finally:
        tmp.unlink(missing_ok=True)


def modified(path: str) -> str | None:
    """An image file's modification time as an image result records it (UTC, ISO 8601, to the
    microsecond): a resumed run redoes an image replaced since. None when there is no such file."""
    from datetime import datetime, timezone

    try:
        return datetime.fromtimestamp(os.stat(path).st_mtime_ns / 1e9, timezone.utc).isoformat()
    except (OSError, ValueError, OverflowError):
        return None


class _Out:
    """``--out`` open for appending and locked for one run: two runs into one file would each answer
    every input it lacks, and write them twice. The lock is taken before the file is read."""

    def __init__(self, out: Path):
        self.out, self.f = out, self._open_locked(out)

    @staticmethod
    def _open_locked(out: Path) -> TextIO:
        try:
            import fcntl
        except ImportError:  # pragma: no cover - Windows: no advisory locks; one run per file is the user's care
            fcntl = None
        while True:
            try:
                f = open(out, "a", encoding="utf-8")
            except OSError as e:
                raise InputError(f"--out {out} cannot be written: {e.strerror or e}.") from None
            try:
                if fcntl is not None:
                    fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                f.close()
                raise InputError(f"Another run is writing {out}; wait for it to end, or give another --out.") from None
            except OSError:  # a file system without locks (NFS without its lock daemon): run unlocked
                return f
            try:  # the file locked is still the one at that path (another run may have replaced it meanwhile)
                if os.path.samestat(os.fstat(f.fileno()), os.stat(out)):
                    return f
            except OSError:
                pass
            f.close()

    def reopen_if_replaced(self) -> TextIO:
        """The file to append to once ``pending`` has read it: a resume that drops changed or failed
        inputs' lines replaces the file, and the new one is locked before the old one is let go."""
        if not os.path.samestat(os.stat(self.out), os.fstat(self.f.fileno())):
            new = self._open_locked(self.out)
            self.f.close()
            self.f = new
        return self.f


@contextlib.contextmanager
def exclusive(out: Path) -> Iterator[_Out]:
    if not out.parent.is_dir():
        raise InputError(f"The directory of --out ({out.parent}) does not exist.")
    if out.is_dir():
        raise InputError(f"--out {out} is a directory; give a .jsonl file name.")
    created = not out.exists()
    held = _Out(out)
    try:
        yield held
    except BaseException:  # a run that failed before writing a line leaves no file it created
        if created and os.fstat(held.f.fileno()).st_size == 0:
            out.unlink(missing_ok=True)
        raise
    finally:
        held.f.close()


def pending(items: list[str], out: Path, model: str | None = None, variant: str | None = None,
            retry_errors: bool = False, new_file: bool = True, options: dict | None = None,
            ranks: int | None = None) -> tuple[list[str], dict[str, Any]]:
    """The items ``out`` does not answer yet, or answers for an input that has changed since
    (an edited line of a text file, an image file modified since), and the run's opening
    figures (``total``, ``skipped``, ``failed`` (skipped inputs whose lines are errors),
    ``retried``, ``changed``, ``gone`` (lines of a text file this run reads, past its new end:
    they can be run again from the file; no other run's line is dropped)); see
    :func:`done_inputs` for the checks on ``out``."""
    fields = [input_fields(item) for item in items]
    names = {f["input"] for f in fields}
    texts = {f["input"]: f["text"] for f in fields if "text" in f}
    # the text files this run reads (their lines are "<file>:<n>"); standard input differs from run to run
    files = {key.rpartition(":")[0] for key in texts} - {"<stdin>"}

    def stale(line: dict) -> str | None:
        key = line["input"]
        # the line of a file that it answers (None: not a file's line); a generation's lines give
        # it as "prompt", since their "text" is the output
        said = line["prompt"] if "prompt" in line else (None if "finish_reason" in line else line.get("text"))
        if key not in names:  # another run's input is kept: only a line of a file this run reads is judged
            file, _, n = key.rpartition(":")
            if file in files and n.isdigit() and said is not None:
                return "gone"  # a line past the file's new end: it can be run again from the file
            if key in files and "error" in line and said is None:
                return "changed"  # an unreadable file mended: its lines run now
            return None
        if said is not None and key in texts:
            if said != texts[key] and key.startswith("<stdin>:"):  # another stream, not an edit: its results are not ours to replace
                raise InputError(f"{out} holds the results of another standard input ({key} was {_short(said)}, now "
                                 f"{_short(texts[key])}); give another --out, or --new-file for a new name.")
            return "changed" if said != texts[key] else None
        return "changed" if "modified" in line and line["modified"] != modified(key) else None

    already, failed, dropped = done_inputs(out, model, variant, retry_errors, new_file, stale, names.__contains__, options, ranks)
    todo: list[str] = []
    old_errors = 0
    for f, item in zip(fields, items):
        if already[f["input"]] > 0:
            already[f["input"]] -= 1
            if failed[f["input"]] > 0:
                failed[f["input"]] -= 1
                old_errors += 1
        else:
            todo.append(item)
    stats: dict[str, Any] = {"total": len(items), "skipped": len(items) - len(todo), "failed": old_errors, **dropped,
                             "done": 0, "errors": 0, "first_error": None, "truncated": 0}
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
    rows = [_printable(json.loads(line)) for line in nonblank_lines(Path(journal))] if Path(journal).exists() else []
    # A result row's keys first, in its order, and error last: the columns come in one order whether
    # or not the first row failed (an error row lacks top_k and has error before model)
    first = next((r for r in rows if "error" not in r), {})
    keys = list(dict.fromkeys([*first, *(k for r in rows for k in r), *([] if rows else ["input"])]))
    keys = [k for k in keys if k != "error"] + ["error"]
    try:
        table = pa.table({k: _column(pa, k, [r.get(k) for r in rows]) for k in keys})
    except pa.ArrowException as e:
        raise InputError(f"The results in {journal} do not fit one Parquet table ({str(e).splitlines()[0][:200]}); "
                         "keep the JSON lines.") from None
    out = Path(out)
    check_parquet_target(out, journal)
    table = table.replace_schema_metadata({_MARK: b"results"})  # what check_parquet_target knows it by
    out = through_link(out)  # through a symlink, as _drop_lines
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    try:
        pq.write_table(table, tmp)
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return table.num_rows


def _column(pa, name: str, values: list):
    """One Parquet column. ``error`` is always there, as text (null where the row has a result),
    so tables of runs with and without failures have one schema; embeddings that a float32 model
    computed are stored as float32 (JSON's float64 doubled the file for nothing)."""
    want = {"input": pa.string(), "error": pa.string()}.get(name)
    if name == "embedding" and (given := [v for v in values if v is not None]):  # error rows have none
        import numpy as np

        try:
            flat = np.asarray(given, dtype=np.float64)  # ragged, nested or with null values: as they come
            want = pa.list_(pa.float32()) if flat.ndim == 2 and np.array_equal(flat.astype(np.float32), flat) else None
        except (TypeError, ValueError):
            pass
    if want is not None:
        try:
            return pa.array(values, type=want)
        except (pa.ArrowException, TypeError, ValueError):  # per-token embeddings (nested lists): as they come
            pass
    return pa.array(values)


_MARK = b"edgeai"  # the key of the Parquet schema metadata edgeai writes


def check_parquet_target(out: str | os.PathLike, journal: str | os.PathLike) -> None:
    """Refuse to replace a Parquet file edgeai did not write: one with its journal beside it, or
    edgeai's mark in its metadata, is ours (review: ``--out sales.parquet`` replaced a user's table)."""
    out = Path(out)
    if not out.exists() or Path(journal).exists():
        return
    try:
        import pyarrow.parquet as pq

        ours = _MARK in (pq.read_schema(out).metadata or {})
    except Exception:  # noqa: BLE001 -- not Parquet at all, or unreadable: not ours either
        ours = False
    if not ours:
        raise InputError(f"{out} exists and is not edgeai's results (no {Path(journal).name} beside it); "
                         "give another --out, or --new-file for a new name.")


def _short(text: str, n: int = 40) -> str:
    return repr(text if len(text) <= n else text[: n - 1] + "\u2026")
