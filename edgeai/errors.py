"""edgeai's one family of user-facing errors.

Every bad input ends in an :class:`EdgeAIError` whose message is one sentence saying what was
expected and what was given. The CLI catches this family only: anything else is a bug and
keeps its traceback.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from typing import Callable, Iterator


class EdgeAIError(Exception):
    """Base class of every error edgeai raises on purpose."""


class InputError(EdgeAIError, ValueError):
    """An input (image, array, text, feed dict) that does not fit the model."""


class PackageError(EdgeAIError):
    """A model package that is missing, damaged, tampered with or of an unknown schema."""


class ProviderError(EdgeAIError):
    """An execution provider that was asked for and cannot run the model."""


class ExportError(EdgeAIError):
    """A model that could not be exported, optimized or quantized."""


class DependencyError(EdgeAIError):
    """An optional extra (e.g. ``edgeai[export]``) that a command needs is not installed."""


class PipelineClosedError(EdgeAIError, RuntimeError):
    """A call on a :class:`edgeai.Pipeline` after its ``close()``."""


class EdgeAIWarning(UserWarning):
    """What a build says to its user beside its result (``warnings.warn``); the CLI prints each
    as a ``warning:`` line once its progress is done."""


class TraceWarning(EdgeAIWarning):
    """The export's trace turned a tensor of the user's own model into a Python value (an ``if``
    on a tensor, ``.item()``): the ONNX graph keeps what the example computed there. Said with
    ``warnings.warn``; the CLI prints it as a ``warning:`` line."""


class UnsteadyTimingWarning(EdgeAIWarning):
    """The latencies export, optimize or quantize just recorded look disturbed (a busy machine:
    see ``edgeai._records.unsteady``). They are recorded, and ``auto`` chooses by them, so the
    warning names ``edgeai bench PKG --record`` to time them again. The CLI prints a ``warning:``."""


def shell_arg(x: object) -> str:
    """``x`` as one shell word, for the commands that messages suggest: a path with a space in it
    is quoted, so the suggestion still runs when pasted (``edgeai bench 'my model' --record``)."""
    import shlex

    return shlex.quote(str(x))


def unreadable(path: str | os.PathLike, listing: bool = True) -> str | None:
    """The sentence "PATH cannot be read: permission denied..." where this user may not read
    ``path``: a file they may not open, a folder they may not enter (nor, with ``listing``, list;
    a package's folder is only entered), or either inside a folder they may not enter (where
    Python's ``exists()`` and ``is_file()`` raise, not answer); else None."""
    try:
        st = os.stat(path)
    except PermissionError:
        return f"{os.fspath(path)} cannot be read: permission denied on a folder it is in."
    except (OSError, ValueError):  # missing, a name too long: the caller's own sentences
        return None
    directory = stat.S_ISDIR(st.st_mode)
    mode = (os.R_OK if listing or not directory else 0) | (os.X_OK if directory else 0)
    return None if os.access(path, mode) else f"{os.fspath(path)} cannot be read: permission denied."


# What the machine refuses us (permissions, a read-only or full disk): the user's to fix, not a bug. The CLI
# words these in one sentence (cli._refused); a folder that cannot be made for another reason is said where it is made.
REFUSALS = frozenset({errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC, errno.EDQUOT})


def shown(path: str | os.PathLike) -> str:
    """``path`` as a user knows it: writes go through hidden temporary names beside their target
    (".NAME.tmp-...", ".NAME.edgeai-tmp-..."), which name nothing the user asked for: their folder."""
    from pathlib import Path

    p = Path(path)
    return os.fspath(p.parent if p.name.startswith(".") and "tmp-" in p.name else p)


def short_of_space(need: int, *places: str | os.PathLike) -> str | None:
    """"the disk holding PATH is nearly full (N MB free; the graph is M MB)" where one of
    ``places`` (folders being written) has less than ``need`` bytes free, else None. ONNX Runtime
    and onnx report a full disk as "Protobuf serialization failed" or a corrupt wire format, and
    torch's exporter as whatever it tripped on next: this is the sentence a user can act on."""
    import shutil

    for place in places:
        try:
            free = shutil.disk_usage(place).free
        except OSError:
            continue
        if free < need:
            return f"the disk holding {shown(place)} is nearly full ({free / 1e6:.1f} MB free; the graph is {need / 1e6:.1f} MB)"
    return None


def whole(name: str, v: object, low: int, high: int | None = None) -> int:
    """``v``, a whole number (numpy's too; not a bool) in ``[low, high]``, as an int; or one InputError."""
    import numbers

    if isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < low or (high is not None and v > high):
        raise InputError(f"{name} must be a whole number of at least {low}{'' if high is None else f' and at most {high}'}; got {v!r}.")
    return int(v)


def real(name: str, v: object, low: float | None = None) -> float:
    """``v``, a number that is not NaN (and, with ``low``, finite and at least that), as a float; or one InputError."""
    import math
    import numbers

    if isinstance(v, bool) or not isinstance(v, numbers.Real) or math.isnan(v) or (low is not None and not low <= v < math.inf):
        raise InputError(f"{name} must be a {'number' if low is None else f'finite number of at least {low:g}'}; got {v!r}.")
    return float(v)


def a_type(x: object) -> str:
    """``"an int"``, ``"a list"``: the type of ``x`` with its article, for error sentences."""
    return with_article(type(x).__name__)


def with_article(word: str) -> str:
    """``"an int64"``, ``"a uint8"``, ``"an image-classification"``: ``word`` with its article."""
    w = word.lower()  # by sound, for the words edgeai says: dtypes, tasks, type names
    vowel = (w[:1] in ("a", "e", "i", "o") and not w.startswith(("one", "eu"))) or (
        w[:1] == "u" and not w.startswith(("uint", "uni", "us", "utf", "uuid")))
    return f"{'an' if vowel else 'a'} {word}"


def user_level() -> int:
    """``warnings.warn``'s stacklevel, for the function that calls this, that points at the first
    caller outside edgeai: a warning then names the user's line, whatever path led to it (a
    fixed level named edgeai's own pipeline.py for predict() and the user's line for embed())."""
    import os
    import sys

    # edgeai's folder, and its export and quantize packages', which an editable install keeps
    # beside it (only an imported one can have frames on the stack)
    roots = tuple(os.path.abspath(p) + os.sep for name in ("edgeai", "edgeai.export", "edgeai.quantize")
                  for p in getattr(sys.modules.get(name), "__path__", ()))
    frame, level = sys._getframe(1), 1
    while frame is not None and frame.f_code.co_filename.startswith(roots):
        frame, level = frame.f_back, level + 1
    return level


# warn_user's registries, one per file as Python keeps one per module; emptied past this many entries.
_WARNED: dict[str, dict] = {}
_WARNED_MAX = 512


def warn_user(warning: Warning) -> None:
    """``warnings.warn(warning)`` at the user's line (user_level), shown once per message and line as
    Python's "default" action does, but remembered in registries of bounded size: Python's own, in
    the user's module, keeps every distinct message for ever, and a truncation warning quotes its
    text (review: about 300 bytes per distinct long text, a server's slow leak)."""
    import sys
    import warnings

    level = user_level()  # counted from this function: 1 is this frame, so the user's is level - 1 above it
    try:
        frame = sys._getframe(level - 1)
        where = frame.f_code.co_filename, frame.f_lineno, frame.f_globals.get("__name__", "<string>"), frame.f_globals
    except ValueError:  # no caller outside edgeai
        where = "sys", 1, "sys", None
    if sum(len(r) for r in _WARNED.values()) > _WARNED_MAX:
        _WARNED.clear()
    try:
        warnings.warn_explicit(warning, type(warning), where[0], where[1], module=where[2],
                               registry=_WARNED.setdefault(where[0], {}), module_globals=where[3])
    except ImportError:  # `python -c`, the REPL: __main__'s loader (BuiltinImporter) raised for its source line (review)
        warnings.warn_explicit(warning, type(warning), where[0], where[1], module=where[2], registry=_WARNED[where[0]])


@contextlib.contextmanager
def said_after(say: Callable[[str], None], others: bool = True) -> Iterator[None]:
    """Collect the warnings a build says to its user (:class:`EdgeAIWarning`: a trace that kept
    a Python value, latencies recorded on a busy machine, ids drawn from a part of their table)
    and give each to ``say`` as one line once the build is done, instead of Python's
    ``file:line: Category: message`` and a source line of edgeai's. Other warnings are shown as
    Python shows them, or, with ``others=False`` (an export: the PyTorch exporters' chatter about
    their own internals), not at all."""
    import warnings

    # Said also when the build fails or is interrupted, before its error: what it left behind
    # (a variant added but not timed) is told by a warning.
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", EdgeAIWarning)
            yield
    finally:
        for w in caught:
            if issubclass(w.category, EdgeAIWarning):
                say(str(w.message))
            elif others:
                warnings.showwarning(w.message, w.category, w.filename, w.lineno)
