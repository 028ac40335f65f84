"""The ``edgeai`` command line: thin commands over the Python API (one module per group)."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from edgeai import __version__

from . import build, info, perf
from . import run as run_mod

app = typer.Typer(
    name="edgeai",
    help="Export PyTorch models to ONNX, optimize and quantize them, and run them offline.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    rich_markup_mode=None,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"edgeai {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[Optional[bool], typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")] = None,
) -> None:
    """Export PyTorch models to ONNX, optimize and quantize them, and run them offline."""


app.command("run")(run_mod.run)
app.command("export")(build.export)
app.command("optimize")(build.optimize)
app.command("quantize")(build.quantize)
app.command("inspect")(info.inspect)
app.command("models")(info.models)
app.command("bench")(perf.bench)
app.command("report")(perf.report)
app.command("doctor")(info.doctor)


def main() -> None:
    app()
