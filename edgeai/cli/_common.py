"""What every command shares: consoles, the one-sentence error line, stage progress."""

from __future__ import annotations

import json
import sys
import time
from enum import Enum
from typing import Any, Callable, Sequence

import typer

from edgeai.postprocess import to_jsonable

from ._plain import style


class _LazyConsole:
    """A rich Console made on first use: ``edgeai run`` prints without rich (see _plain.py)
    and so never pays for importing it."""

    def __init__(self, **options: Any):
        self._options = options
        self._console = None

    @property
    def console(self):
        if self._console is None:
            from rich.console import Console

            self._console = Console(highlight=False, soft_wrap=True, emoji=False, **self._options)
        return self._console

    def __getattr__(self, name: str) -> Any:
        return getattr(self.console, name)


out = _LazyConsole()
err = _LazyConsole(stderr=True)


def plain_error(message: str) -> None:
    # Messages carry paths and user text: print them literally, never as markup.
    sys.stderr.write(style("error:", "bold", "red", stream=sys.stderr) + " " + message + "\n")
    sys.stderr.flush()


def variant_notes(pipe: Any, asked: str) -> None:
    """The notes ``run`` and ``generate`` print after loading: a provider fallback, and a variant
    run on another CPU's figures or, when asked for by name, one that misses the budget."""
    from ._plain import note

    if pipe.session.choice.fell_back:
        note(f"note: {pipe.provider_note}")
    reason = pipe.variant_reason
    if ("another CPU" in reason or "cannot rank" in reason or "not every variant was timed on" in reason
            or ("misses" in reason and asked != "auto")):
        note(f"note: running {pipe.variant}: {reason}.")


def choice_enum(name: str, values: Sequence[str]) -> type[Enum]:
    """A ``str`` Enum whose members are the library's own names (Typer shows them as choices)."""
    return Enum(name, {v.replace("-", "_"): v for v in values}, type=str)


def single_command(fn: Callable, name: str):
    """One function as a click command, as ``edgeai NAME`` would run it."""
    sub = typer.Typer(add_completion=False, pretty_exceptions_enable=False, rich_markup_mode=None)
    sub.command(name)(fn)
    return typer.main.get_command(sub)


def lazy_command(app: typer.Typer, name: str, help: str, build: Callable[[], Any]) -> None:
    """Register ``name`` with a one-line help; ``build()`` makes the real command only when it runs
    (its options may need the family registry or a heavier module). Every argument, ``--help``
    included, is handed to it; its exit code and usage errors come back unchanged."""

    @app.command(name, help=help, add_help_option=False,
                 context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
    def forward(ctx: typer.Context) -> None:
        code = build().main(args=list(ctx.args), prog_name=ctx.command_path, standalone_mode=False)
        if code == 130:  # typer's main turns Ctrl-C into exit code 130 without a word: say it, as `run` does
            plain_error("interrupted")
        if isinstance(code, int) and code:
            raise typer.Exit(code)


class Stages:
    """Progress for long builds: a spinner with the current stage, a line per finished stage."""

    def __init__(self, title: str):
        self.title = title
        self.t0 = time.perf_counter()
        self.status = err.status(title)
        self.last: str | None = None
        self.t_last = self.t0

    def __enter__(self) -> "Stages":
        self.status.__enter__()
        return self

    def __call__(self, stage: str) -> None:
        """A new stage; the same stage with new details in parentheses only updates the line."""
        if self.last is None or stage.split(" (")[0] != self.last.split(" (")[0]:
            self._close_stage()
            self.t_last = time.perf_counter()
        self.last = stage
        self.status.update(f"{self.title}: {stage}")

    def _close_stage(self) -> None:
        if self.last is not None:
            err.print(f"  [green]✓[/] {self.last} [dim]({time.perf_counter() - self.t_last:.1f}s)[/]", markup=True)

    def __exit__(self, exc_type, *rest: Any) -> None:
        self.status.__exit__(exc_type, *rest)
        if exc_type is None:
            self._close_stage()
            err.print(f"[bold]{self.title}[/]: done in {time.perf_counter() - self.t0:.1f}s")


def print_wide(renderable: Any) -> None:
    """Print a table whole: a console that is not a terminal (a pipe, a file) has a nominal
    width of 80 and rich would squeeze figures into "…"; there, and on a terminal too narrow for
    the table (review: inspect's latency table read "0.9…" at 80 columns), use the width the
    table needs and let the terminal wrap its lines: a figure is never cut."""
    from rich.console import Console
    from rich.measure import Measurement

    wide = Console(highlight=False, soft_wrap=True, width=1000, file=out.file)
    need = Measurement.get(wide, wide.options, renderable).maximum
    if out.is_terminal and need <= out.width:
        out.print(renderable)
        return
    Console(highlight=False, soft_wrap=True, width=max(80, need), file=out.file).print(renderable)


def print_json(doc: Any) -> None:
    sys.stdout.write(json.dumps(to_jsonable(doc), indent=2) + "\n")
    sys.stdout.flush()


def size_text(nbytes: int) -> str:
    """A file size for people: KB under 0.1 MB (where "0.0 MB" would say nothing), else MB."""
    return f"{nbytes / 1e3:.1f} KB" if nbytes < 1e5 else f"{nbytes / 1e6:.1f} MB"


def _gpu_only_device(provider: str | None, device_id: int) -> None:
    """--device-id with --provider cpu: refused, not ignored (inspect refuses it without --provider)."""
    if device_id and provider is not None and provider.strip().lower() in ("cpu", "cpuexecutionprovider"):
        from edgeai.errors import InputError

        raise InputError(f"--device-id {device_id} picks a GPU, and --provider cpu runs on none: leave one of them out.")
