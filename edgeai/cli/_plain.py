"""Plain terminal output for the one command that must start fast: ``edgeai run``.

rich (used by every other command for progress bars and wide tables) costs ~45 ms to import,
about a sixth of a cold ``edgeai run`` here; the run path prints a header, a few aligned
columns and note lines, which needs no layout engine. Colour follows the usual conventions:
only on a terminal, never with ``NO_COLOR`` set or ``TERM=dumb``.
"""

from __future__ import annotations

import os
import sys
from typing import Sequence, TextIO

_CODES = {"bold": "1", "dim": "2", "red": "31", "green": "32", "yellow": "33", "cyan": "36"}


def _colour(stream: TextIO) -> bool:
    if os.environ.get("NO_COLOR") or os.environ.get("TERM") == "dumb":
        return False
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def style(text: str, *names: str, stream: TextIO | None = None) -> str:
    """``text`` in the named styles when ``stream`` (stdout by default) is a colour terminal."""
    if not names or not _colour(stream or sys.stdout):
        return text
    return f"\x1b[{';'.join(_CODES[n] for n in names)}m{text}\x1b[0m"


def say(line: str = "", stream: TextIO | None = None) -> None:
    (stream or sys.stdout).write(line + "\n")


def note(line: str) -> None:
    """A line on stderr, printed literally (paths and user text are never markup)."""
    sys.stderr.write(line + "\n")
    sys.stderr.flush()


def warn(line: str) -> None:
    """``warning: LINE`` on stderr: something the user should know, that did not stop the command."""
    note(style("warning:", "yellow", stream=sys.stderr) + " " + line)


def table(rows: Sequence[Sequence[str]], header: Sequence[str], right: set[int] = frozenset(),
          dim: set[int] = frozenset()) -> list[str]:
    """Columns padded to their widest cell, two spaces apart; ``right`` columns right-aligned,
    ``dim`` columns dimmed on a terminal."""
    cells = [list(header), *[list(r) for r in rows]]
    widths = [max(text_width(r[i]) for r in cells) for i in range(len(header))]
    lines = []
    for n, r in enumerate(cells):
        parts = []
        for i, c in enumerate(r):
            pad = " " * (widths[i] - text_width(c))
            c = pad + c if i in right else (c + pad if i < len(r) - 1 else c)
            parts.append(style(c, "bold") if n == 0 else (style(c, "dim") if i in dim else c))
        lines.append("  ".join(parts).rstrip())
    return lines


def text_width(text: str) -> int:
    """Terminal columns: East Asian wide and fullwidth characters (CJK, most emoji) take two."""
    if text.isascii():
        return len(text)
    from unicodedata import east_asian_width

    return sum(2 if east_asian_width(ch) in "WF" else 1 for ch in text)


def shown(text: str, keep: str = "") -> str:
    """``text`` with its control characters escaped (``\\x1b``), those in ``keep`` aside: a user's
    text echoed with its ESC sequences cleared or recoloured the terminal (review)."""
    return "".join(ascii(ch)[1:-1] if (ch < " " or "\x7f" <= ch <= "\x9f") and ch not in keep else ch for ch in text)
