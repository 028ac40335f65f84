"""The ``edgeai`` command line: thin commands over the Python API (one module per group)."""

from __future__ import annotations

import errno
import os
from pathlib import Path
from typing import Annotated, Optional

import typer
from typer.core import TyperGroup

from edgeai import __version__
from edgeai.errors import REFUSALS, EdgeAIError, shown, unreadable

from . import build
from . import run as run_mod
from ._common import lazy_command, plain_error, single_command


class _Group(TyperGroup):
    """Every command runs through this group's ``invoke``: the one place errors are caught. A
    user error (EdgeAIError) is one sentence and exit 1, and so is a place the machine will not
    let us write (permissions, a read-only or full disk); Ctrl-C exit 130; anything else is a bug
    and keeps its traceback. Click's own outcomes (help, usage errors, typer.Exit) pass through."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except EdgeAIError as e:
            plain_error(str(e))
            raise typer.Exit(1) from None
        except OSError as e:
            if e.errno not in REFUSALS:
                raise
            plain_error(_refused(e))
            raise typer.Exit(1) from None
        except (KeyboardInterrupt, typer.Abort):  # a lazily built command sees Ctrl-C as click's Abort
            plain_error("interrupted")
            raise typer.Exit(130) from None


def _refused(e: OSError) -> str:
    """One sentence for an OSError of REFUSALS. Writes go through hidden temporary names
    (".NAME.tmp-...", ".NAME.edgeai-tmp-...") beside their target: name the folder for those.
    A permission error may come from a read: said so where the path is unreadable."""
    where = Path(shown(os.fsdecode(e.filename))) if e.filename else None
    if where is None:
        return f"A file cannot be written or read: {e.strerror or e}."
    if e.errno in (errno.EACCES, errno.EPERM) and (why := unreadable(where)):  # exists() raises in an unenterable folder
        return why
    return f"{where} cannot be written: {e.strerror or e}."


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
# The other commands are built when they run (or show their help): importing their modules, with
# every option's declaration, is time `edgeai run` does not need to spend (the first minute).
_LAZY = [
    ("inspect", "info", "Show a package: manifest, variants with their measurements, inputs, outputs, operators."),
    ("models", "info", "List the built-in models and the packages cached in $EDGEAI_HOME."),
    ("bench", "perf", "Measure a package: start-up, first call, p50/p90/p99, throughput, peak memory."),
    ("report", "perf", "Write one self-contained HTML page: the parity ladder and charts."),
    ("doctor", "info", "What this machine can run: ONNX Runtime build, providers, GPU libraries."),
    ("generate", "generate", "Continue prompts with a text-generation package, streamed, with tokens/s."),
]


def _builder(name: str, module: str):
    def build_command():
        import importlib

        return single_command(getattr(importlib.import_module(f"{__name__}.{module}"), name), name)

    return build_command


for _name, _module, _help in _LAZY:
    lazy_command(app, _name, _help, _builder(_name, _module))


def main(argv: list[str] | None = None) -> None:
    """The console script. Once a command is done, the process ends without the interpreter's
    teardown (freeing ~400 modules and ONNX Runtime's environment: 50-100 ms of a ~0.4 s cold
    `edgeai run` here, that nobody waits for usefully). The streams are flushed and the atexit
    handlers run first (they end the generation threads edgeai started: edgeai.streams); with a
    non-daemon thread still alive after them, Python exits the usual way."""
    _terminate_in_order()
    _streams_that_take_any_text()
    try:
        app(args=argv)
        code = 0
    except SystemExit as e:  # click ends every command, help and usage error included, with SystemExit
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    _fast_exit(code)


def _streams_that_take_any_text() -> None:
    """A character the console's encoding lacks (an emoji in a text, on a cp1252 Windows console
    or redirect) is written escaped (``\\U0001f3ae``) instead of ending the command with a
    UnicodeEncodeError halfway through a table (review), and a closed stdout or stderr (``>&-``)
    discards what is written to it, as Python's own ``print`` does, instead of an AttributeError."""
    import os
    import sys

    for name in ("stdout", "stderr"):
        stream = getattr(sys, name)
        if stream is None:
            setattr(sys, name, open(os.devnull, "w", encoding="utf-8"))  # noqa: SIM115 -- lives as long as the process
        elif hasattr(stream, "reconfigure"):
            try:
                stream.reconfigure(errors="backslashreplace")
            except (ValueError, OSError):  # a stream that cannot be reconfigured (a test's capture): as it is
                pass


def _terminate_in_order() -> None:
    """SIGTERM (``kill``, ``timeout``, a service manager stopping us) ends the command the way
    Ctrl-C does: as an exception, so that staging folders, temporary directories and benchmark
    workers are cleaned up on the way out. By default it would end the process on the spot, and
    leave a quantizer's temporary graphs in /tmp. Exit status 143 (128 + 15), as the shell's."""
    import signal

    def terminated(signum, frame):
        signal.signal(signum, signal.SIG_DFL)  # a second SIGTERM ends it at once, cleanup or not
        plain_error("terminated")
        raise SystemExit(128 + signum)

    try:
        signal.signal(signal.SIGTERM, terminated)
    except (ValueError, OSError):  # not the main thread (an embedding program): leave its handlers alone
        pass


def _fast_exit(code: int) -> None:
    import atexit
    import os
    import sys
    import threading

    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except (BrokenPipeError, ValueError):  # a reader that went away: nothing more to say
        code = code or 1
    atexit._run_exitfuncs()  # first: edgeai's own end the threads it started (edgeai.streams)
    # Only a live non-daemon thread is waited for: a daemon one, or one whose Python part has just
    # ended, would only get the interpreter's teardown of ONNX Runtime, which aborts under it (134).
    if any(t.is_alive() and not t.daemon for t in threading.enumerate() if t is not threading.current_thread()):
        sys.exit(code)
    os._exit(code)
