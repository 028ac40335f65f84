"""Where built-in packages live (``$EDGEAI_HOME``) and how they are built on first use."""

from __future__ import annotations

import contextlib
import importlib.util
import os
import re
import shutil
import sys
from pathlib import Path
from typing import Callable, Iterator

from typing import TYPE_CHECKING

from . import __version__
from .errors import REFUSALS, DependencyError, InputError, PackageError, a_type, said_after, unreadable
from .package import MANIFEST, Package

if TYPE_CHECKING:
    from .families import Family


DEFAULT_MODEL = "efficientnet-lite0"


def resolve_builtin(name: str) -> Family | None:
    """The family that builds the built-in model ``name`` (or an alias of it), else None."""
    from . import families  # the registry reads entry points: only when a name is looked up

    family = families.resolve(name)
    return family if family is not None and family.model else None  # hf builds nothing by name


def home() -> Path:
    """``$EDGEAI_HOME``, default ``~/.cache/edgeai`` (``$XDG_CACHE_HOME/edgeai`` when set)."""
    env = os.environ.get("EDGEAI_HOME")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or (Path.home() / ".cache")
    return Path(base) / "edgeai"


def cache_dir() -> Path:
    path = home()
    try:
        path.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):  # review: a traceback where $EDGEAI_HOME named a file
        raise _not_a_folder(path) from None
    except OSError as e:  # a link loop, a name too long, a dangling link: one sentence, not a traceback
        if e.errno in REFUSALS:
            raise  # the CLI's own sentence for a folder this user may not write
        raise _cannot(path, e) from None
    return path


def _cannot(path: Path, e: OSError) -> InputError:
    return InputError(f"Cannot use {path} ({_where()}): {e.strerror or type(e).__name__}; point EDGEAI_HOME at a folder.")


def _where() -> str:
    return "$EDGEAI_HOME" if os.environ.get("EDGEAI_HOME") else "edgeai's cache folder"


def _existing_home() -> Path | None:
    """The cache folder for a command that reads or empties it, None where it is not made yet: one
    that is a file is refused (`models` listed it as an empty cache and `--clear` as cleared; review)."""
    root = home()
    try:
        if not root.is_dir() and any(p.is_file() for p in (root, *root.parents)):
            raise _not_a_folder(root)
        return root if root.is_dir() else None
    except OSError as e:  # a name too long, a link loop (is_dir raises for these)
        raise _cannot(root, e) from None


def _not_a_folder(path: Path) -> InputError:
    where = _where()
    if path.is_symlink() and not path.exists():
        return InputError(f"{path} ({where}) is a link to {os.readlink(path)}, which does not exist; point EDGEAI_HOME at a folder.")
    return InputError(f"{path} ({where}) is a file, or inside one, not a folder; point EDGEAI_HOME at a folder.")


def is_built(name: str) -> bool:
    """Whether built-in ``name``'s package is in the cache (one sentence for a cache path the
    system refuses: a name too long, a link loop)."""
    try:
        return (builtin_dir(name) / MANIFEST).is_file()
    except OSError as e:
        raise _cannot(home(), e) from None


def builtin_dir(name: str) -> Path:
    """One directory per built-in name and edgeai version."""
    return home() / f"{name}-{__version__}"


def cached_packages() -> list[Path]:
    root = _existing_home()
    if root is None:
        return []
    return sorted(p for p in root.iterdir() if p.is_dir() and (p / MANIFEST).is_file())


# What edgeai keeps in $EDGEAI_HOME beside the packages: saved CPU graphs, remembered hashes, TensorRT engines.
_OWN_CACHES = ("ort-cpu", "hashes", "tensorrt")


def clear() -> tuple[int, list[str]]:
    """Remove from ``$EDGEAI_HOME`` the packages, the debris of killed builds and edgeai's own
    caches; returns how many packages were removed and the names of the entries left, which
    edgeai did not make ($EDGEAI_HOME may point at a folder that holds other things too). A build
    running in another process keeps its staging folder and its lock."""
    from .atomic import _TMP_MARK, staging_owner_alive

    root, removed, left = _existing_home(), 0, []
    if root is None:
        return 0, []
    for entry in sorted(root.iterdir()):
        real_dir = entry.is_dir() and not entry.is_symlink()
        if entry.name.startswith(".") and (entry.name.endswith(".lock") or _TMP_MARK in entry.name):
            if entry.name.endswith(".lock") or staging_owner_alive(entry.name.partition(_TMP_MARK)[2]):
                continue  # a build's lock, or the staging folder of one still running
        elif real_dir and (entry / MANIFEST).is_file():
            removed += 1
        elif entry.name not in _OWN_CACHES:
            left.append(entry.name)
            continue
        if real_dir:
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
    return removed, left


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+b") as f:
        if os.name == "nt":  # pragma: no cover - exercised on Windows only
            import msvcrt

            msvcrt.locking(f.fileno(), msvcrt.LK_LOCK, 1)
        else:
            import fcntl

            fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        yield


def stderr_progress(stage: str) -> None:
    """The default progress of a first-use build from Python: one stderr line per stage (a
    stage repeated with new details in parentheses is not printed again)."""
    head = stage.split(" (")[0]
    if head != getattr(stderr_progress, "_last", None):
        stderr_progress._last = head  # type: ignore[attr-defined]
        # a counter would stay at its first value ("(0/9)"): the line is printed once
        print(f"edgeai: {re.sub(r' [(][0-9]+/[0-9]+[)]$', '', stage)}", file=sys.stderr, flush=True)


def ensure_builtin(name: str, progress: Callable[[str], None] | None = None) -> Path:
    """The directory of built-in package ``name``, building it under a lock on first use.

    ``progress`` receives each stage of a build as a short sentence; by default the stages are
    printed to stderr (a build takes a minute or two), ``progress=lambda stage: None`` is silent."""
    fam = resolve_builtin(name)
    if fam is None:
        from .families import names_line

        raise PackageError(f"Unknown model {name!r}: not a package directory and not a built-in name ({names_line()}).")
    target = builtin_dir(fam.model)
    if is_built(fam.model):
        return target
    if importlib.util.find_spec("torch") is None:
        raise DependencyError(
            f"The built-in model {fam.model!r} is not built yet, and building it needs the export extra: "
            f"pip install 'edgeai[export]' (then rerun), or pass --model with a package directory."
        )
    with _locked(cache_dir() / f".{fam.model}.lock"):
        if not (target / MANIFEST).is_file():  # another process may have built it meanwhile
            from edgeai.export import export_model

            said = contextlib.nullcontext()
            if progress is None:
                progress = stderr_progress
                progress(f"building {fam.model} into {target} on first use (later loads reuse it)")
                # the build's own warnings (timings taken on a busy machine) as lines like its
                # progress, not as Python's "exporter.py:397: UnsteadyTimingWarning" between them
                said = said_after(lambda line: print(f"edgeai: warning: {line}", file=sys.stderr, flush=True), others=False)
            with said:
                export_model(fam.model, target, progress=progress)
    return target


def open_package(path_or_name: str | os.PathLike, progress: Callable[[str], None] | None = None) -> Package:
    """A package directory (or its manifest.json), or a built-in name built on first use."""
    if not isinstance(path_or_name, (str, os.PathLike)):
        raise InputError(f"A model is a package directory or a built-in name (a str or a path); got {a_type(path_or_name)}.")
    if not str(path_or_name).strip():  # Path("") is ".": an unset variable ran the current folder, or the default model
        from .families import names_line

        raise InputError(f"The model name is empty; give a package directory or a built-in name ({names_line()}).")
    path = Path(path_or_name)
    if why := unreadable(path, listing=False):  # exists() raises, not answers, in a folder this user cannot enter
        raise PackageError(f"The package {why}")
    # a bare name that is also a file or folder here, not a package: the registry is loaded for this
    # refusal only (loading a package by name or path does not load it: the torch-free runtime)
    bare = isinstance(path_or_name, str) and os.sep not in path_or_name and "/" not in path_or_name
    fam = resolve_builtin(path_or_name) if bare and path.exists() and not (path / "manifest.json").is_file() else None
    if fam is not None:
        other = next((n for n in (fam.model, *fam.aliases) if n != path_or_name and not Path(n).exists()), None)
        other = f"give the built-in as {other}" if other else "run from another folder"  # another of its names is not hidden
        raise PackageError(f"{path_or_name} is a {'folder' if path.is_dir() else 'file'} here, not a package, and it hides the "
                           f"built-in {path_or_name}: {other}, or rename it.")
    if path.exists():
        return Package.open(path)
    if isinstance(path_or_name, str) and (fam := resolve_builtin(path_or_name)):
        built = ensure_builtin(path_or_name, progress=progress)
        try:
            return Package.open(built)
        except PackageError as e:  # the cache's copy, not the user's: say how to make it again
            raise PackageError(f"{str(e).rstrip('.')}. It is edgeai's cached build of {fam.model}: remove {built} "
                               "and the next use builds it again.") from None
    from .families import names_line

    raise PackageError(f"No model package at {path_or_name} and no built-in model of that name (built-in: {names_line()}).")
