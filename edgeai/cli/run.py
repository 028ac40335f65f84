"""``edgeai run``: classify inputs with a package (or the default model, built on first use)."""

from __future__ import annotations

import contextlib
import os
import time
import warnings
from pathlib import Path
from typing import Annotated, Optional

import numpy as np
import typer

from edgeai.errors import InputError, said_after, shell_arg, unreadable, with_article

from ._common import Stages, _gpu_only_device, err, plain_error, print_json, variant_notes
from ._plain import note, say, shown, style, table, text_width, warn


def run(
    inputs: Annotated[list[str], typer.Argument(metavar="INPUTS...", help="Image files; for a text model, texts, or text files read line by line (a folder: its .txt, .lst and .list files).", show_default=False)],
    model: Annotated[Optional[str], typer.Option("--model", "-m", help="Package directory or built-in name [default: efficientnet-lite0].")] = None,
    top_k: Annotated[Optional[int], typer.Option("--top-k", "-k", min=1, help="How many classes to show (classifiers) [default: 5].")] = None,
    json_: Annotated[bool, typer.Option("--json", help="Print one JSON document on stdout.")] = False,
    provider: Annotated[str, typer.Option(help="auto, cpu, cuda or tensorrt.")] = "auto",
    variant: Annotated[str, typer.Option(help="auto, fp32, optimized, int8, fp16 or int4.")] = "auto",
    threads: Annotated[Optional[int], typer.Option(min=1, help="CPU threads [default: the count the chosen variant was timed fastest on here, else ONNX Runtime's choice].")] = None,
    device_id: Annotated[int, typer.Option("--device-id", min=0, help="CUDA device index for CUDA/TensorRT (as CUDA_VISIBLE_DEVICES leaves them).")] = 0,
    out_file: Annotated[Optional[Path], typer.Option("--out", help="Bulk: write one JSON line per input to this file (resumable), or a .parquet file; INPUTS may be folders and list files.")] = None,
    batch_size: Annotated[Optional[int], typer.Option(min=1, help="Bulk: inputs per model call [default: 16].")] = None,
    workers: Annotated[Optional[int], typer.Option(min=1, help="Bulk: image decoding threads [default: up to 4].")] = None,
    ray_address: Annotated[Optional[str], typer.Option("--ray", help="Bulk on Ray: 'local' starts a local instance, or a cluster address (needs the ray extra).")] = None,
    literal: Annotated[bool, typer.Option("--text", help="Text models: every argument is a text as it is, even one that names a file.")] = False,
    new_file: Annotated[bool, typer.Option("--new-file", help="Bulk: write RESULTS.<model>-<variant>.jsonl beside --out instead (when --out holds another model's or variant's results).")] = False,
    retry_errors: Annotated[bool, typer.Option("--retry-errors", help="Bulk: run again the inputs whose lines in --out are errors (their error lines are replaced).")] = False,
) -> None:
    """Run a model on INPUTS: top classes for classifiers, dimension and cosine similarities for
    embedding models, each prompt's continuation for text-generation packages (greedy, 64 new
    tokens; edgeai generate has the sampling and streaming options); says which variant and
    provider ran.

    For a text model, an argument that names an existing file is read as inputs, one per
    non-blank line (a folder: the lines of every .txt, .lst or .list file under it, hidden
    ones skipped), and its results say
    "input": "FILE:LINE" and "text"; any other argument is one text. --text makes every
    argument a text. With --out, every image under the folders (or every text line) given,
    as JSON lines, resumable."""
    import edgeai
    from edgeai.home import DEFAULT_MODEL, builtin_dir, cache_dir, is_built, resolve_builtin
    from edgeai.text_inputs import expand_text_inputs

    _check_options(out_file, ray_address, new_file, retry_errors, batch_size, workers, json_)
    _gpu_only_device(provider, device_id)
    if model is None:
        _model_named_as_input(inputs, resolve_builtin)
    name = DEFAULT_MODEL if model is None else model  # --model "" (an unset $MODEL) is refused, not the default
    b = resolve_builtin(name) if not _is_path(name) else None
    if b is not None and b.task == "image-classification" and literal:  # before a first-use build, and before a file check
        raise InputError(f"--text is for text models; {b.model} is {with_article(b.task)} model (for text: --model bert).")
    if b is not None and b.task == "image-classification" and out_file is None:
        _folders_need_out(inputs)
    if b is not None and b.task == "image-classification" and not any(_is_path(x) for x in inputs) and out_file is None:
        # Say so before a first-use build that could take a minute.
        from edgeai.preprocess import open_image

        open_image(inputs[0])  # raises the one-sentence error (with a hint when it looks like text)
    if b is not None and not is_built(b.model):
        cache_dir()  # a $EDGEAI_HOME that cannot be a folder is said before the build is announced
        note(f"First use of {b.model}: building its package in {builtin_dir(b.model)} (later runs reuse it).")
        # the build's warnings (timings taken on a busy machine) as warning: lines after its stages
        with said_after(warn, others=False), Stages(f"building {b.model}") as stages:
            pipe = edgeai.load(name, provider=provider, variant=variant, threads=threads, device_id=device_id, progress=stages)
    else:
        pipe = edgeai.load(name, provider=provider, variant=variant, threads=threads, device_id=device_id)
        if b is None and "/" not in name and os.sep not in name and (hidden := resolve_builtin(name)) is not None:
            # review: what `--model cnn` ran depended on the folder the command started in, without a word
            also = f" ({hidden.model})" if hidden.model != name else ""
            warn(f"{name} here is a package of {pipe.name}, which hides the built-in {name}{also}; give ./{name} to mean the folder.")
    variant_notes(pipe, variant)
    if pipe.placement_note:
        from edgeai.providers import short_name

        note(f"note: not every node runs on {short_name(pipe.provider)}: {pipe.placement_note}")
    if literal and not pipe.is_text:
        raise InputError(f"--text is for text models; {pipe.name} is {with_article(pipe.task)} model.")
    top_k = 5 if top_k is None and pipe.ranks_classes else top_k  # checked where it is used: predict_each, run_bulk, run_ray
    from edgeai.tasks import takes_arrays

    if out_file is not None:
        if takes_arrays(pipe):  # feature-extraction & co. too, not a plugin's own preprocessing
            raise InputError("Bulk runs (--out) take images or texts; a tensor model runs its .npy/.npz files, or a "
                             f"folder of them, without --out (edgeai run --model {shell_arg(name)} DIR --json).")
        _run_bulk(pipe, inputs, out_file, batch_size or 16, workers, top_k, ray_address, provider,
                  {"literal": literal, "new_file": new_file, "retry_errors": retry_errors})
        return
    if takes_arrays(pipe):  # feature-extraction & co. too, not a plugin's own preprocessing
        inputs = _array_files(inputs)
        _tokens_need_a_text_package(pipe, inputs)
    elif not pipe.is_text:
        _folders_need_out(inputs)
    items = expand_text_inputs(inputs, literal) if pipe.is_text else inputs
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        results = pipe.predict_each(items, top_k=top_k)
    for w in caught:  # text truncation: a warning line each, the results still count
        warn(str(w.message))

    from edgeai.journal import model_id

    # "model" is what the user named (DESIGN.md); "package" what ran: its name and variant file's hash, as bulk lines say
    doc = {"model": name, "package": model_id(pipe.package, pipe.variant), "variant": pipe.variant, "provider": pipe.provider,
           "results": results}
    if json_:
        print_json(doc)
    else:
        _print_human(pipe, doc)
    failed = [r for r in results if "error" in r]
    for r in failed:
        plain_error(_naming_its_file(r))
    if failed:
        raise typer.Exit(1)


def _naming_its_file(result: dict) -> str:
    """A failed input's error, led by its file where the sentence does not name it (a decoded
    image's pixels, an array's shape): with several files, which one failed."""
    where, error = str(result.get("input", "")), result["error"]
    path = where.rsplit(":", 1)[0] if ":" in where and not os.path.exists(where) else where  # a text file's path:line
    return f"{where}: {error}" if where and where not in error and path and os.path.exists(path) else error


def _check_options(out_file: Path | None, ray_address: str | None, new_file: bool, retry_errors: bool,
                   batch_size: int | None = None, workers: int | None = None, json_: bool = False) -> None:
    """Refuse what a run would ignore: bulk options without --out, --json with it, an --out that is not JSON lines."""
    if out_file is None:
        for flag, given in (("--ray", ray_address is not None), ("--new-file", new_file), ("--retry-errors", retry_errors),
                            ("--batch-size", batch_size is not None), ("--workers", workers is not None)):
            if given:
                raise InputError(f"{flag} is for a bulk run: add --out results.jsonl.")
        return
    if json_:
        raise InputError("--json prints results on stdout, and --out writes them to a file: give one of them.")
    if workers is not None and ray_address is not None:
        raise InputError("--workers sets this machine's image decoding threads; with --ray each actor decodes its own batches.")
    if out_file.suffix.lower() not in (".jsonl", ".json", ".ndjson", ".parquet") and not out_file.is_dir():
        raise InputError(f"--out writes JSON lines (.jsonl) or a Parquet table (.parquet); {out_file.name} would hold "
                         "JSON lines under another name: name it .jsonl.")


def _model_named_as_input(inputs: list[str], resolve_builtin) -> None:
    """``edgeai run PKG x.npz``, as ``inspect PKG`` and ``bench PKG`` are written: the first
    argument is a package folder or a built-in name (and no file of that name), not an input."""
    first = inputs[0]
    path = Path(first)
    if unreadable(first):  # is_file() would raise; the input's own error line says why
        return
    if (path / "manifest.json").is_file() or (first.strip() and not path.exists() and resolve_builtin(first) is not None):
        rest = " ".join(shell_arg(x) for x in inputs[1:]) or "INPUTS..."
        raise InputError(f"{first} is a model, and edgeai run takes inputs: name the model with --model, "
                         f"as in edgeai run --model {shell_arg(first)} {rest}")


def _array_files(inputs: list[str]) -> list[str]:
    """A tensor model's inputs: a folder stands for the .npy/.npz files under it, subfolders
    included and hidden ones not, in name order, as a folder of images or texts does (review)."""
    from edgeai.text_inputs import files_under, listed_file

    files: list[str] = []
    for x in inputs:
        if x.strip() and Path(x).is_dir():
            found = [str(p) for p in files_under(Path(x)) if p.suffix.lower() in (".npy", ".npz") and listed_file(p)]
            if not found:
                raise InputError(f"{x} holds no .npy or .npz files, which is what a tensor model runs on.")
            files += found
        else:
            files.append(x)
    return files


def _tokens_need_a_text_package(pipe, inputs: list[str]) -> None:
    """A tensor package fed by token ids (an encoder exported by Optimum as feature-extraction)
    given words: say which export makes a package that reads text."""
    if "input_ids" in {s["name"] for s in pipe.package.manifest["inputs"]} and any(
            Path(x).suffix.lower() not in (".npy", ".npz") and not Path(x).is_file() for x in inputs):
        raise InputError(f"{pipe.name} takes .npz files of token ids, not text (a tensor package: from the checkpoint, "
                         "`edgeai export bert --model DIR` makes a text-embedding package, and `edgeai export --model DIR "
                         "--task text-classification` or `token-classification` one for such a head).")


def _folders_need_out(inputs: list[str]) -> None:
    """An image model given only folders or list files (not empty arguments: Path("") is the
    current folder)."""
    from edgeai.bulk import LIST_SUFFIXES

    if all(x.strip() and Path(x).is_dir() for x in inputs):
        raise InputError(f"{inputs[0]} is a folder: add --out results.jsonl to run every input in it.")
    if lists := [x for x in inputs if Path(x).suffix.lower() in LIST_SUFFIXES and Path(x).is_file()]:
        from itertools import islice

        from edgeai.preprocess import IMAGE_SUFFIXES
        from edgeai.text_inputs import read_text_lines

        head = list(islice((x for x in read_text_lines(Path(lists[0]), head=1 << 16) if not x.lstrip().startswith("#")), 5))
        if head and not any(Path(line.strip()).suffix.lower() in IMAGE_SUFFIXES for line in head):
            raise InputError(f"{lists[0]} holds text, not image paths, and this is an image model "
                             "(for text, use a text model: --model bert).")
        raise InputError(f"{lists[0]} is a list of image paths: add --out results.jsonl to run every input in it.")


@contextlib.contextmanager
def _resumable(out_file: Path, lines: Path):
    """On Ctrl-C or SIGTERM, say that what was written stays and how to go on, before the error line
    (``lines``: the JSON lines file, ``out_file`` itself or a .parquet output's journal)."""
    try:
        yield
    except (KeyboardInterrupt, SystemExit) as e:
        if isinstance(e, KeyboardInterrupt) or e.code == 143:  # 143: SIGTERM (cli._terminate_in_order)
            if lines.exists() and lines.stat().st_size:
                note(f"note: the lines written so far are kept; the same command resumes {out_file} where it stopped.")
            else:  # review: it said lines were kept in a file that did not exist
                note(f"note: it stopped before any result was written to {out_file}; the same command starts it again.")
        raise
    except OSError as e:  # review: a full disk was a traceback from f.flush()
        import errno

        if e.errno not in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EIO, errno.EROFS):
            raise
        raise InputError(f"Writing {out_file} failed ({e.strerror}); the lines written so far are kept: make room "
                         "and run the same command to resume.") from None


def _run_bulk(pipe, inputs: list[str], out_file: Path, batch_size: int, workers: int | None, top_k: int,
              ray_address: str | None = None, provider: str = "auto", opts: dict | None = None) -> None:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskProgressColumn, TextColumn, TimeRemainingColumn

    from edgeai.bulk import list_inputs, run_bulk
    from edgeai.journal import check_parquet_target, journal_for, new_file_for, write_parquet
    from edgeai.providers import short_name

    opts = opts or {}
    if opts.get("new_file"):
        out_file = new_file_for(out_file, pipe.name, pipe.variant)
        err.print(f"--new-file: writing {out_file}", markup=False)
    again = {"retry_errors": opts.get("retry_errors", False), "new_file": not opts.get("new_file")}
    parquet, out_file = (out_file, journal_for(out_file)) if journal_for(out_file) != out_file else (None, out_file)
    if parquet is not None:
        import importlib.util

        if importlib.util.find_spec("pyarrow") is None:
            write_parquet(out_file, parquet)  # raises the one-sentence DependencyError before any work
        check_parquet_target(parquet, out_file)  # before any work, too
    items = list_inputs(inputs, pipe.is_text, opts.get("literal", False))
    if not items:
        raise InputError(f"No {'text lines' if pipe.is_text else 'images'} found in {', '.join(inputs)}.")
    columns = (TextColumn("{task.description}"), BarColumn(bar_width=16), MofNCompleteColumn(), TaskProgressColumn(),
               TextColumn("{task.fields[rate]}"), TextColumn("ETA"), TimeRemainingColumn())
    t0 = time.perf_counter()
    with _resumable(parquet or out_file, out_file), Progress(*columns, console=err.console, transient=True,
                                                              disable=not err.is_terminal) as bar:
        # short enough for the count and the ETA to fit 80 columns (review: "155… 100% 21.7/s ETA 0:00:…")
        task = bar.add_task(f"{pipe.name} ({pipe.variant}, {short_name(pipe.provider)})", total=None, rate="")

        def step(done: int, total: int) -> None:
            rate = done / max(time.perf_counter() - t0, 1e-9)
            bar.update(task, completed=done, total=total, rate=f"{rate:.1f}/s" if done else "")

        if ray_address is None:
            stats = run_bulk(pipe, items, out_file, batch_size=batch_size, workers=workers, top_k=top_k, progress=step,
                             generate=opts.get("generate"), **again)
        else:
            from edgeai.integrations.ray import run_ray

            stats = run_ray(pipe.package.path, items, out_file, address=ray_address, batch_size=batch_size,
                            provider=provider, variant=pipe.variant, top_k=top_k, progress=step, **again)
    new = stats["done"]
    rate = f" at {new / stats['seconds']:.1f}/s" if new and stats["seconds"] > 0 else ""
    skipped = f"; {stats['skipped']} already there, skipped" if stats["skipped"] else ""
    skipped += f"; {stats['retried']} error line(s) retried" if stats.get("retried") else ""
    skipped += f"; {stats['changed']} redone, their input changed since" if stats.get("changed") else ""
    skipped += f"; {stats['gone']} dropped, their input is gone" if stats.get("gone") else ""
    errors = f", {stats['errors']} of them {'an error' if stats['errors'] == 1 else 'errors'}" if stats["errors"] else ""
    err.print(f"{out_file}: {new} new result line(s){errors}{rate}{skipped} ({pipe.variant}, {pipe.provider}).", markup=False)
    if parquet is not None:
        rows = write_parquet(out_file, parquet)
        err.print(f"{parquet}: {rows} rows (from {out_file}, which keeps the run resumable).", markup=False)
    if stats.get("truncated"):
        n = pipe.package.manifest.get("preprocess", {}).get("max_length")
        warn(f"{stats['truncated']} text(s) were longer than the model's {n} tokens and were cut to {n}; their lines say "
             '"truncated": true.')
    if stats["errors"]:
        plain_error(f"{stats['errors']} input(s) failed (their lines say why); the first: {stats['first_error']}")
    if stats.get("failed"):  # skipped, but answered by error lines: the file is not a success yet
        plain_error(f"{out_file} still holds {stats['failed']} error line(s) from an earlier run; --retry-errors runs those inputs again.")
    if stats["errors"] or stats.get("failed"):
        raise typer.Exit(1)


def _is_path(name: str) -> bool:
    return Path(name).exists()


def _print_human(pipe, doc: dict) -> None:
    if all("error" in r for r in doc["results"]):
        return
    say(f"{style(pipe.name, 'bold')} · variant {style(pipe.variant, 'cyan')} · provider {style(pipe.provider, 'cyan')}")
    ok = [r for r in doc["results"] if "error" not in r]
    if ok and "embedding" in ok[0]:
        _print_similarities(ok)
        return
    if ok and "outputs" in ok[0]:
        for r in ok:
            say(style(r["input"], "bold"))
            for name, a in r["outputs"].items():
                a = np.asarray(a)
                flat = a.reshape(-1)
                head = np.array2string(flat[:8], precision=4, separator=", ")
                more = f" ... (min {flat.min():.4g}, max {flat.max():.4g}, mean {flat.mean():.4g})" if flat.size > 8 else ""
                say(f"  {name}: shape {list(a.shape)} {a.dtype}  {head}{more}")
        return
    for r in ok:
        if "finish_reason" in r:  # a text-generation package: the prompt, then its continuation (or answer)
            say(style(r.get("prompt", r["input"]), "bold") + (" → " if pipe.task == "text2text-generation" else "") + r["text"])
            continue
        say(style(_short(r["input"], 100) + (f" · {_short(r['text'], 60)}" if "text" in r else ""), "bold"))  # --json has it whole
        if "entities" in r:
            rows = [(e["entity_group"], e["word"], f"{e['score']:.3f}", f"{e['start']}-{e['end']}") for e in r["entities"]]
            for line in table(rows, ("entity", "word", "score", "chars"), right={2, 3}, dim={3}) if rows else ["(no entities)"]:
                say(line)
            continue
        rows = [(str(rank), c["label"], f"{c['score']:.3f}", str(c["index"])) for rank, c in enumerate(r["top_k"], 1)]
        for line in table(rows, ("#", "class", "probability", "index"), right={0, 2, 3}, dim={0, 3}):
            say(line)


def _short(text: str, n: int = 48) -> str:
    """The text on one line, cut to ``n`` terminal columns (a CJK character takes two). Control characters
    are shown escaped (``\\x1b``): a line's ESC sequences cleared or recoloured the terminal (review)."""
    text = shown(" ".join(text.split()))
    if text_width(text) <= n:
        return text
    cut, used = [], 1  # the ellipsis' column
    for ch in text:
        used += text_width(ch)
        if used > n:
            break
        cut.append(ch)
    return "".join(cut) + "…"


MATRIX_TEXTS = 8  # more texts than this: no n x n table


def _print_similarities(results: list[dict]) -> None:
    """Embedding dimension, then the pairwise cosine-similarity table of the texts."""
    vectors = np.stack([r["embedding"] for r in results]).astype(np.float64)
    norms = np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    unit = vectors / norms
    sim = unit @ unit.T
    say(f"{len(results)} text(s) -> {vectors.shape[1]}-dimensional embeddings")
    if len(results) == 1:
        say("give two or more texts to see their cosine similarities (--json prints the vectors)")
        return
    n = len(results)
    if n > MATRIX_TEXTS:  # a table n columns wide no terminal shows: each text's nearest other one
        np.fill_diagonal(sim, -np.inf)
        best = sim.argmax(1)
        say(style(f"most similar other text (the whole table up to {MATRIX_TEXTS} texts; --json prints the vectors)", "bold"))
        rows = [(str(i + 1), _short(r.get("text", r["input"])), str(best[i] + 1), f"{sim[i, best[i]]:.3f}") for i, r in enumerate(results)]
        header: tuple = ("#", "text", "nearest", "cosine")
    else:
        say(style("cosine similarity", "bold"))
        rows = [(str(i + 1), _short(r.get("text", r["input"])), *(f"{sim[i, j]:.3f}" for j in range(n))) for i, r in enumerate(results)]
        header = ("#", "text", *(str(j + 1) for j in range(n)))
    for line in table(rows, header, right={0, *range(2, len(header))}, dim={0}):
        say(line)
