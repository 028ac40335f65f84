"""Which command-line style arguments are texts and which are files of texts, and reading them:
the lines of a file, a folder's text files, standard input (``-``). Each line read is a
:class:`TextLine` that remembers where it came from; a file that cannot be read is an
:class:`UnreadFile`, one input refused alone. Tokenizing is :mod:`edgeai.text`'s concern."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

from .errors import InputError, unreadable

TEXT_SUFFIXES = (".txt", ".lst", ".list")
_TABLE_SUFFIXES = (".csv", ".tsv", ".json", ".jsonl", ".ndjson", ".parquet")


def files_under(folder: Path, blocked: list[Path] | None = None) -> list[Path]:
    """Every path under ``folder``, sorted, subfolders included, but not hidden ones (a name
    that starts with a dot, below ``folder`` itself: a .cache or .git holds no one's inputs, and
    a home folder's caches hold thousands of files), as ``ls`` and most tools list a folder.
    Linked subfolders are followed, each real folder once, under its own name where it lies
    inside ``folder`` (a link to it is passed over), else under the first link's in name order; a
    link up to ``folder`` or above it is a loop, not followed (as ``find -L`` says). A folder this
    user may not list (``folder`` itself or one below it) is added to ``blocked``, whose inputs a
    bulk run reports as one error; without ``blocked``, it is an InputError. os.walk alone passes
    over it in silence, and its files were lost without a word (review)."""
    found, seen, root = [], set(), os.path.realpath(folder)
    inside = lambda real: (real + os.sep).startswith(root.rstrip(os.sep) + os.sep)  # noqa: E731
    refused: list[Path] = []

    def onerror(e: OSError) -> None:
        if isinstance(e, PermissionError) and e.filename is not None:
            refused.append(Path(os.fsdecode(e.filename)))

    for top, dirs, files in os.walk(folder, onerror=onerror, followlinks=True):
        real = os.path.realpath(top)
        if real in seen or root.startswith(real.rstrip(os.sep) + os.sep):  # already listed, or a loop
            dirs[:] = []
            continue
        seen.add(real)
        if not os.access(top, os.X_OK):  # listed but not entered (mode r--): its files cannot be opened
            refused.append(Path(top))
            dirs[:] = []
            continue
        dirs[:] = sorted(d for d in dirs if not d.startswith(".")  # not even walked: a home folder's .cache is large
                         and not (os.path.islink(os.path.join(top, d)) and inside(os.path.realpath(os.path.join(top, d)))))
        found += [Path(top, f) for f in files if not f.startswith(".")]
    if refused and blocked is None:  # one this user may not list or enter
        raise InputError(f"{refused[0]} cannot be read: permission denied; its files cannot be listed.")
    if blocked is not None:
        blocked.extend(sorted(refused))
    return sorted(found)


def listed_file(path: Path) -> bool:
    """Whether an entry of :func:`files_under` is a file to run: a regular file, or one this user
    may not even look at (a link into a folder they may not enter), whose reading then says why."""
    try:
        return path.is_file()
    except OSError:
        return unreadable(path) is not None


# First bytes of files that are surely not text, for the message that says what the file looks like.
_MAGIC = (
    (b"\xff\xd8\xff", "a JPEG image"), (b"\x89PNG\r\n\x1a\n", "a PNG image"), (b"GIF8", "a GIF image"),
    (b"RIFF", "a RIFF (WebP/WAV) file"), (b"II*\x00", "a TIFF image"), (b"MM\x00*", "a TIFF image"),
    (b"%PDF", "a PDF document"), (b"PK\x03\x04", "a ZIP archive"), (b"\x1f\x8b", "a gzip archive"),
    (b"\x93NUMPY", "a NumPy array file"), (b"BM", "a BMP image"),
)


class TextLine(str):
    """A text read from a file: the string is the line, ``input`` says where it came from
    (``"reviews.txt:3"``, 1-based line numbers), and results name it that way."""

    input: str

    def __new__(cls, text: str, input: str) -> "TextLine":
        self = super().__new__(cls, text)
        self.input = input
        return self

    def __reduce__(self):  # pickles (thread pools, Ray) keep where it came from
        return (TextLine, (str(self), self.input))


class UnreadFile(TextLine):
    """A text file of a folder that cannot be read (binary, UTF-16 without a byte-order mark):
    an input of its own, named by its path, that :func:`check_text` refuses with ``error``, so
    a bulk run gives it an error line and the folder's other files still run."""

    error: str

    def __new__(cls, input: str, error: str) -> "UnreadFile":
        self = super().__new__(cls, "", input)
        self.error = error
        return self

    def __reduce__(self):
        return (UnreadFile, (self.input, self.error))


class TextArg(str):
    """A text given as a command-line argument among files' lines: ``where`` names it as the user typed
    it ("Argument 2 of 2"); counted among the lines, an empty one was "Text 4 of 4" (review)."""

    where: str

    def __new__(cls, text: str, where: str) -> "TextArg":
        self = super().__new__(cls, text)
        self.where = where
        return self

    def __reduce__(self):
        return (TextArg, (str(self), self.where))


def input_fields(x: Any, label: str | None = None, prompt: bool = False) -> dict:
    """The fields a result starts with: ``{"input": <text or path>}``, or for a line read from a
    file ``{"input": "path:line", "text": <the line>}``; with ``prompt`` (a generation, whose
    ``text`` is its output) the line is ``"prompt"``. An unreadable file is ``{"input": path}``."""
    if isinstance(x, UnreadFile):
        return {"input": x.input}
    if isinstance(x, TextLine):
        return {"input": x.input, "prompt" if prompt else "text": str(x)}
    return {"input": label if label is not None else str(x)}


_UTF32_BOMS = (b"\xff\xfe\x00\x00", b"\x00\x00\xfe\xff")
_UTF16_BOMS = (b"\xff\xfe", b"\xfe\xff")


def _not_text(head: bytes) -> bool:
    """Control bytes a text does not hold (tab, newlines and form feed aside), or bytes that are not
    UTF-8 (but for a character the read cut at the end)."""
    import codecs

    if any(b < 0x20 and b not in b"\t\n\r\f" for b in head):
        return True
    try:  # final=False: only a character cut at the end of the head is let through
        codecs.getincrementaldecoder("utf-8")().decode(head, final=False)
    except UnicodeDecodeError:
        return True
    return False


def _looks_binary(head: bytes) -> str | None:
    """What a file that is not text looks like (from its first bytes), or None for text."""
    if head.startswith(_UTF16_BOMS):
        return None  # Windows Notepad's "Unicode": read as UTF-16 (or UTF-32, whose marks start the same)
    for magic, kind in _MAGIC:
        if head.startswith(magic) and (b"\x00" in head if magic == b"BM" else not all(32 <= b < 127 for b in magic) or _not_text(head)):
            return kind  # a magic a text can start with ("RIFFS and solos were great") needs binary bytes after it
    odd, even = head[1::2], head[0::2]
    if len(head) >= 4 and max(odd.count(0) / len(odd) - even.count(0) / len(even),
                              even.count(0) / len(even) - odd.count(0) / len(odd)) > 0.9:
        return "UTF-16 text with no byte-order mark"
    return "a binary file" if b"\x00" in head else None


def read_text_lines(path: str | os.PathLike, show: str | None = None, head: int | None = None) -> list[TextLine]:
    """Every non-blank line of a text file, each a :class:`TextLine` named ``"<path>:<n>"``
    (``head``: only the lines of its first ``head`` bytes, the last of them perhaps cut).

    A file that is not text (an image, an archive, anything with NUL bytes) is an InputError;
    a line that is not valid UTF-8 is kept (as surrogates), and :func:`check_text` refuses it
    alone, so the other lines still run."""
    show = show if show is not None else str(path)
    try:
        with open(path, "rb") as f:
            # the first bytes alone first: a binary file or device (/dev/zero, /dev/urandom) is said
            # from them, not after reading it whole (endless: a MemoryError traceback)
            data = f.read(8192 if head is None else min(head, 8192))
            if _looks_binary(data) is None and len(data) == 8192 and (head is None or head > 8192):
                data += f.read(-1 if head is None else head - len(data))
    except OSError as e:
        raise InputError(f"{show} cannot be read ({e.strerror or e}); give a readable text file.") from None
    except MemoryError:
        raise InputError(f"{show} is larger than the memory this machine has free; split it, or run it with --out.") from None
    return lines_of(data, show)


def lines_of(data: bytes, show: str) -> list[TextLine]:
    """The non-blank lines of a text file's (or standard input's) bytes, named ``"<show>:<n>"``."""
    import io

    head = data[:8192]
    kind = _looks_binary(head)
    if kind is not None and kind.startswith("UTF-16"):
        raise InputError(f"{show} looks like {kind}, which cannot be read reliably; save it as UTF-8 (or as UTF-16 with "
                         "a byte-order mark, as Windows Notepad does).")
    if kind is not None:
        raise InputError(f"{show} is not a text file (it looks like {kind}); this model takes text: give a text file "
                         "(one input per line), or pass --text to use the argument's words themselves as the input.")
    found = []
    # -sig: a BOM is not text. surrogateescape keeps a bad UTF-8 byte for check_text to refuse
    # with its line; it cannot stand for broken UTF-16/32 (an odd last byte), which "replace" marks
    wide = "utf-32" if head.startswith(_UTF32_BOMS) else "utf-16" if head.startswith(_UTF16_BOMS) else None
    text = data.decode(wide or "utf-8-sig", "replace" if wide else "surrogateescape")
    with io.StringIO(text, newline=None) as f:  # the line breaks open() reads: \n, \r\n, \r
        for n, line in enumerate(f, 1):
            line = line.rstrip("\n")
            if line.strip():
                found.append(TextLine(line, f"{show}:{n}"))
    return found


def _existing(arg: str) -> Path | None:
    """The path an argument names, if it names an existing file or folder (an empty or blank
    argument is a text: ``Path("")`` would be the current directory)."""
    if not arg.strip():
        return None
    try:
        path = Path(arg)
        return path if unreadable(path) or path.exists() else None  # one this user may not see is still a path (exists() raises)
    except (OSError, ValueError):  # a name too long for the filesystem, a NUL byte: a text
        return None


def expand_text_inputs(args: Sequence[Any], literal: bool = False) -> list[str]:
    """The texts a text model runs on, from command-line style arguments.

    ``literal=True``: every argument is a text as it is. Otherwise an argument that names an
    existing file is read as input lines (every non-blank line is one input; see
    :func:`read_text_lines`), a folder gives the lines of every ``.txt``/``.lst``/``.list`` file
    under it (sorted, recursively, hidden ones skipped: :func:`files_under`), and anything else
    is a text as it is (so an empty argument is an empty text, refused by :func:`check_text`);
    ``-`` is the lines of standard input. A file that cannot be read (binary, empty), named or in
    a folder, is one :class:`UnreadFile` input, refused alone, so the other inputs still run; so
    is a word that reads as a file name but names none (``reviews.txt``, ``./data/``). Lines read from files are :class:`TextLine` strings whose results say ``"input": "<path>:<line>"``."""
    if literal:
        return list(args)
    texts: list[str] = []
    for position, arg in enumerate(args, 1):
        arg = os.fspath(arg) if isinstance(arg, os.PathLike) else arg  # a pathlib.Path names a file, as its string does
        if arg == "-":  # standard input, as cat and grep read it: its non-blank lines
            texts.extend(_stdin_lines(args))
            continue
        path = _existing(arg) if isinstance(arg, (str, os.PathLike)) else None
        if path is not None and (why := unreadable(path)):  # its own error, not "no file named" or "no .txt files"
            texts.append(UnreadFile(str(arg), why))
        elif path is None and isinstance(arg, str) and looks_like_a_missing_file(arg):  # a typo, most likely: not run as
            # words with exit 0, but an error of its own, so a script sees it (review); --text runs the words
            what = "folder" if arg.endswith("/") else "file"  # "./data/" names a folder (review)
            texts.append(UnreadFile(arg, f"No {what} named {arg!r}; to run these words as a text, pass --text "
                                         "(edgeai.bulk.list_inputs(..., literal=True) in Python)."))
        elif path is None:
            texts.append(TextArg(arg, f"Argument {position} of {len(args)}") if isinstance(arg, str) and len(args) > 1 else arg)
        elif path.is_dir():
            blocked: list[Path] = []
            files = [p for p in files_under(path, blocked) if p.suffix.lower() in TEXT_SUFFIXES and listed_file(p)]
            if not files and not blocked:
                raise InputError(f"{arg} is a folder with no .txt, .lst or .list files in it; a text model reads the lines of those "
                                 "(or pass --text to use the words themselves).")
            for f in sorted(files + blocked):  # in name order, the folders it may not list among them
                if f in blocked:
                    texts.append(UnreadFile(str(f), unreadable(f) or f"{f} cannot be read: permission denied."))
                    continue
                try:
                    texts.extend(read_text_lines(f))
                except InputError as e:  # one bad file of many: its own error, as a folder's bad image gets
                    texts.append(UnreadFile(str(f), str(e)))
        elif path.suffix.lower() in _TABLE_SUFFIXES:  # its lines are a header and columns, or JSON: not texts (review)
            kind = "JSON" if "json" in path.suffix.lower() else path.suffix[1:].upper()
            what = "JSON syntax around each text" if kind == "JSON" else "binary columns" if kind == "PARQUET" else "a header and columns"
            texts.append(UnreadFile(str(arg), f"{arg} is a {kind} file, whose lines are not texts alone ({what}); a text model "
                                              "reads one text per line: save the texts alone as a .txt file."))
        else:
            try:
                lines = read_text_lines(path, str(arg))
                if not lines:
                    raise InputError(f"{arg} has no text in it (it is empty or blank); give a file with one input per line.")
            except InputError as e:  # as in a folder: the other inputs still run, this one is an error entry
                lines = [UnreadFile(str(arg), str(e))]
            texts.extend(lines)
    if all(isinstance(t, TextArg) for t in texts):  # texts alone: "Text 2 of 3" already counts them as typed
        return [str(t) for t in texts]
    return texts


def looks_like_a_missing_file(arg: str) -> bool:
    """An argument that reads as a file name (one word that starts like a path or ends in a text
    file's suffix) but names no file: most likely a typo, an error unless --text says it is a text."""
    text = str(arg)
    if not text or any(c.isspace() for c in text) or _existing(text) is not None:
        return False
    if "://" in text:
        return False  # a URL is a text
    return (text.startswith(("/", "./", "../", "~/")) or text.endswith("/")
            or os.path.splitext(text)[1].lower() in (*TEXT_SUFFIXES, ".csv", ".json", ".jsonl", ".md"))


def _stdin_lines(args: Sequence[Any]) -> list[TextLine]:
    import sys

    if sum(1 for a in args if a == "-") > 1:
        raise InputError("'-' (standard input) is given more than once; it can be read once.")
    stream = sys.stdin
    if stream is None:
        raise InputError("'-' reads standard input, and this process has none.")
    raw = getattr(stream, "buffer", None)
    data = raw.read() if raw is not None else stream.read().encode("utf-8", "surrogateescape")
    lines = lines_of(data, "<stdin>")  # the checks a file gets: UTF-16, binary data
    if not lines:
        raise InputError("Standard input ('-') holds no text; pipe in one input per line.")
    return lines
