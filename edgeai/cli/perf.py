"""``edgeai bench`` and ``edgeai report``: measured speed, and the parity ladder as a web page."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from edgeai.errors import InputError, real, said_after

from ._common import err, out, plain_error, print_json, print_wide
from ._plain import warn


def _int_list(text: str, what: str) -> list[int]:
    try:
        values = [int(x) for x in text.split(",")]  # "1,,2" or "8," is a typo, not "1,2"
    except ValueError:
        values = []
    if not values or any(v < 1 for v in values):
        raise InputError(f"{what} takes positive integers separated by commas, e.g. 1,8; got {text!r}.")
    return values


def _fmt(x: float | None, digits: int = 2) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def _ratio(x: float) -> str:
    """Two decimals, or two significant digits below 0.1 (a tiny model's 0.003x is not 0.00x)."""
    return f"{x:.2f}" if x >= 0.1 else f"{x:.2g}"


def bench(
    package: Annotated[str, typer.Argument(metavar="PACKAGE", help="Package directory or built-in name.", show_default=False)],
    variant: Annotated[str, typer.Option(help="all, or variants separated by commas (fp32,int8).")] = "all",
    provider: Annotated[str, typer.Option(help="auto, cpu, cuda or tensorrt; several separated by commas.")] = "auto",
    batch: Annotated[str, typer.Option(help="Batch sizes separated by commas.")] = "1",
    threads: Annotated[Optional[int], typer.Option(min=1, help="CPU threads [default: ONNX Runtime's and PyTorch's own choice].")] = None,
    rounds: Annotated[int, typer.Option(min=1, help="Fresh processes per case, in alternating order.")] = 3,
    runs: Annotated[Optional[int], typer.Option(min=1, max=10**6, help="Timed calls per process [default: at least 30, for at least --min-time seconds].")] = None,
    min_time: Annotated[float, typer.Option(min=0.0, help="Seconds each process times for, when --runs is not given (a quick model stops at 1000 calls).")] = 1.0,
    against: Annotated[Optional[str], typer.Option(help="torch: also measure PyTorch eager on the same weights (needs the export extra).")] = None,
    factory: Annotated[Optional[str], typer.Option(help="FILE.py:FN that builds the PyTorch model of a custom package (with --against torch): the one it was exported from.")] = None,
    input_: Annotated[Optional[Path], typer.Option("--input", help=".npz (or .npy) to time on instead of edgeai's typical input.")] = None,
    tokens: Annotated[Optional[int], typer.Option(help="Text models: tokens per text [default: 128, or the model's most].")] = None,
    device_id: Annotated[int, typer.Option("--device-id", min=0, help="CUDA device index for CUDA/TensorRT and PyTorch on CUDA.")] = 0,
    record: Annotated[bool, typer.Option("--record", help="Store the figures in the manifest (inspect, report and variant=auto use them).")] = False,
    json_: Annotated[bool, typer.Option("--json", help="Print one JSON document on stdout.")] = False,
) -> None:
    """Measure a package: session creation, first inference, p50/p90/p99 latency, throughput and
    peak memory of each variant, each case in its own process, rounds alternating."""
    from edgeai.benchmark import bench as run_bench

    batches = _int_list(batch, "--batch")
    real("--min-time", min_time, low=0)  # NaN and infinity: click's min=0 lets them through (review: said as the API's min_time)
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    bar = Progress(*columns, console=err.console, transient=True, disable=not err.is_terminal)
    tasks: list = []

    def step(done: int, total: int, label: str) -> None:
        if not tasks:  # started by the first measurement, so argument errors print without a bar
            bar.start()
            tasks.append(bar.add_task("benchmarking", total=total))
        bar.update(tasks[0], completed=done, description=f"benchmarking: {label}")

    try:
        with said_after(warn):  # one "warning:" line each (a variant replaced while being timed), not Python's file:line form
            doc = run_bench(package, variants=variant, providers=provider, batches=batches, threads=threads, rounds=rounds,
                            runs=runs, min_time=min_time, against=against, factory=factory, inputs=input_, tokens=tokens,
                            record=record, on_step=step, device_id=device_id)
    finally:
        if tasks:
            bar.stop()
    if json_:
        print_json(doc)
    else:
        _print_table(doc)
    if doc["unsteady"]:
        warn(f"these figures are unsteady ({doc['unsteady']}): the machine was likely busy; compare them with care, "
             f"or run again on a quiet machine, with more --rounds{' (they are recorded all the same)' if record else ''}.")
    if skipped := doc["skipped"]:  # the intact ones were timed; the package still needs mending, as inspect says
        plain_error(f"{len(skipped)} damaged variant(s) not timed: " + "; ".join(f"{n} ({why})" for n, why in skipped.items())
                    + "; copy the package again (or export it again).")
        raise typer.Exit(1)


def _print_table(doc: dict) -> None:
    from edgeai.providers import short_name

    rows = doc["results"]
    has_torch = any(r["vs_torch"] is not None for r in rows)
    t = Table("variant", "provider", "batch", "session", "first", "p50", "p90", "p99", "items/s", "RSS MB",
              *(["x PyTorch"] if has_torch else []), box=None, pad_edge=False,
              title=f"{doc['model']} ({doc['package']}): times in ms", title_justify="left")
    for r in rows:
        name = "PyTorch eager" if r["engine"] == "pytorch" else r["variant"]
        if r["engine"] != "pytorch" and r["threads"] and r["threads"] != doc["threads"]:  # auto's, or recorded on 1 too
            name += f" ({r['threads']} thread{'s' if r['threads'] > 1 else ''})"
        ratio = [_ratio(r["vs_torch"]) if r["vs_torch"] is not None else "-"]
        t.add_row(name, short_name(r["provider"]), str(r["batch"]), _fmt(r["session_ms"], 1), _fmt(r["first_ms"], 1),
                  _fmt(r["p50_ms"], 3), _fmt(r["p90_ms"], 3), _fmt(r["p99_ms"], 3), _fmt(r["throughput"], 1),
                  _fmt(r["peak_rss_mb"], 0), *(ratio if has_torch else []))
    print_wide(t)
    threads = doc["threads"] or "default (ONNX Runtime: one per physical core)"
    torch_threads = {r["threads"] for r in rows if r["engine"] == "pytorch"}
    if torch_threads and not doc["threads"]:
        threads = f"{threads}; PyTorch {', '.join(map(str, sorted(torch_threads)))}"
    from edgeai._bench_worker import MAX_RUNS, MIN_RUNS

    runs = (f"{doc['runs']} timed calls" if doc["runs"] else
            f"at least {MIN_RUNS} timed calls and {doc['min_time_s']:g} s (at most {MAX_RUNS} calls)")
    out.print(Text(f"threads: {threads}; {doc['rounds']} round{'s' if doc['rounds'] != 1 else ''} of fresh processes{', alternating order' if doc['rounds'] > 1 else ''}, {runs} each; "
                   f"inputs: {doc['inputs']}; machine: {doc['machine']}, {doc['cores']} cores", style="dim"))
    engine = "; PyTorch: loading the model" if torch_threads else ""
    ratio = " The x PyTorch column is p50 / PyTorch's p50: below 1 is faster." if has_torch else ""
    out.print(Text(f"session: creating it{engine}; first: the first call after that; both medians "
                   "over rounds. p50/p90/p99 pool the timed calls of all rounds; items/s = batch / p50 latency; "
                   f"RSS MB: the measuring process's peak resident memory.{ratio}", style="dim"))
    from edgeai.providers import placement_line

    for r in rows:
        line = placement_line(r.get("placement") or {}, r["provider"])
        if line:
            out.print(Text(f"{r['variant']} on {short_name(r['provider'])}: not every node runs there: {line}", style="yellow"))
    if doc["recorded"]:
        out.print(Text(f"recorded in {doc['package']}/manifest.json", style="dim"))


def report(
    package: Annotated[str, typer.Argument(metavar="PACKAGE", help="Package directory or built-in name.", show_default=False)],
    output: Annotated[Path, typer.Option("--output", "-o", help="The HTML file to write.")] = Path("report.html"),
    png: Annotated[bool, typer.Option("--png", help="Also write the charts as PNG files beside the page.")] = False,
) -> None:
    """Write one self-contained HTML page: the parity ladder PyTorch -> fp32 -> optimized -> int8
    (-> fp16) with differences, task metrics, sizes and recorded latencies, and charts."""
    from edgeai.pipeline import open_package
    from edgeai.report import damaged_variants, write_report

    if output.suffix.lower() in (".png", ".svg", ".jpg", ".jpeg", ".pdf"):  # `-o r.png` wrote the HTML page into r.png (review)
        raise InputError(f"-o/--output is the HTML page to write, not an image ({output.name}); --png writes the charts "
                         "as PNG files beside it.")
    pkg = open_package(package)
    damaged, files = damaged_variants(pkg), pkg.damaged_assets()
    written = write_report(pkg, output, png=png, warn=lambda msg: err.print(f"note: {msg}", markup=False), damaged=damaged,
                           damaged_files=files)
    for path in written:
        out.print(Text(f"wrote {path}"))
    if damaged:  # the page is written, with those variants marked; the exit code says so too, as inspect's does
        plain_error(f"The package {pkg.path} has {len(damaged)} damaged variant(s), marked on the page: "
                    f"{'; '.join(f'{n}: {why}' for n, why in damaged.items())}")
    if files:  # marked on the page too
        plain_error(pkg.damage_sentence(files))
    if damaged or files:
        raise typer.Exit(1)
