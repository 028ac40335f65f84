"""The ``edgeai`` command line: thin commands over the Python API (one module per group)."""

from __future__ import annotations

import sys
from typing import Annotated, Optional

import typer
from typer.core import TyperGroup

from edgeai import __version__
from edgeai.errors import EdgeAIError

from . import build, info, perf
from . import run as run_mod
from ._common import plain_error

class _Interrupted(Exception):
    """Ctrl-C in a command: Typer would turn a KeyboardInterrupt into a silent exit 130."""


class _Group(TyperGroup):
    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt:
            raise _Interrupted() from None


app = typer.Typer(
    name="edgeai",
    cls=_Group,
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
build.register(app)
app.command("inspect")(info.inspect)
app.command("models")(info.models)
app.command("bench")(perf.bench)
app.command("report")(perf.report)
app.command("doctor")(info.doctor)


def main(argv: list[str] | None = None) -> None:
    """The one place errors are caught: a user error is one sentence and exit 1, Ctrl-C exit 130,
    anything else a bug that keeps its traceback. Click's own outcomes (help, usage errors with
    exit 2, ``typer.Exit``) keep their messages and exit codes."""
    # Typer carries its own copy of click (typer._click); its exceptions are the ones raised here.
    from typer._click.exceptions import ClickException

    try:
        code = app(args=argv, standalone_mode=False)
    except EdgeAIError as e:
        plain_error(str(e))
        code = 1
    except (_Interrupted, KeyboardInterrupt):
        plain_error("interrupted")
        code = 130
    except ClickException as e:
        e.show()
        code = e.exit_code
    except typer.Abort:
        plain_error("aborted")
        code = 1
    sys.exit(code if isinstance(code, int) else 0)
