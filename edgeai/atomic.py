"""Writing packages without ever leaving one half-written (DESIGN.md, "Writing packages").

A new package is built in a temporary sibling directory and renamed into place; a new variant
writes its file first and replaces ``manifest.json`` last; every writer holds the package's
lock for its whole read-modify-write; the debris of killed runs is removed by the next one.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import shutil
import uuid
from pathlib import Path
from typing import Iterator

from .errors import REFUSALS, InputError, PackageError, shell_arg, shown, unreadable

MANIFEST = "manifest.json"
_TMP_MARK = ".edgeai-tmp-"
# The names add_variant gives variant files (fp32: model.<sha12>.onnx).
_VARIANT_FILE = re.compile(r"model(\.(optimized|int8|fp16|int4))?\.[0-9a-f]{12}\.onnx")


def lock_timeout() -> float:
    """How long a writer waits for another one before giving up with a sentence: 600 s, or
    ``$EDGEAI_LOCK_TIMEOUT`` seconds (read when a lock is taken, so a bad value is one sentence
    there, not a traceback of ``import edgeai``)."""
    raw = os.environ.get("EDGEAI_LOCK_TIMEOUT", "600")
    try:
        seconds = float(raw)
    except ValueError:
        seconds = -1.0
    if not seconds >= 0:  # NaN too; inf waits for ever
        raise InputError(f"EDGEAI_LOCK_TIMEOUT={raw!r} is not a number of seconds (0 or more); unset it for the default, 600.")
    return seconds


@contextlib.contextmanager
def package_lock(root: Path, timeout: float | None = None) -> Iterator[None]:
    """An exclusive lock held by every writer of the package at ``root`` for its whole
    read-modify-write; readers take none (they read a manifest that is replaced atomically).

    The lock is ``flock`` on the package directory itself rather than on a file inside it: the
    directory's inode outlives every manifest replacement, and no extra file appears in the
    package for listings, hashes and clean-ups to know about. (Windows: a ``.lock`` file.)
    """
    import time

    timeout = lock_timeout() if timeout is None else timeout
    if os.name == "nt":  # pragma: no cover - exercised on Windows only
        import msvcrt

        with open(root / ".lock", "a+b") as f:
            msvcrt.locking(f.fileno(), msvcrt.LK_LOCK, 1)
            yield
        return
    import fcntl

    fd = os.open(root, os.O_RDONLY)
    try:
        start = time.monotonic()
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() - start > timeout:
                    raise PackageError(f"Another edgeai process has been writing the package {root} for over {timeout:.0f} s; "
                                       "wait for it to finish (or stop it) and rerun.") from None
                time.sleep(0.05)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock


def through_link(final: str | os.PathLike) -> Path:
    """Where a package (or a results file) at ``final`` is written: a symlink's target (models/current ->
    ../store/v3), staged beside it. Renamed in place, the link itself was replaced by a new
    folder, and the target kept the old model with the user's files moved out of it."""
    final = Path(final).absolute()
    return final.resolve() if final.is_symlink() else final


def _unmakeable(e: OSError, what: str) -> None:
    """Raise a folder that cannot be made (``what``) as one sentence. Permissions and a full or
    read-only disk go on to the CLI, which words them; the rest (review: ``-o /proc/nope``, ENOENT
    in a file system that takes no new folders) was a traceback."""
    if e.errno in REFUSALS:
        raise e
    raise PackageError(f"Cannot make {what}: {e.strerror or e}.") from None


@contextlib.contextmanager
def staging_dir(final: Path, model: str | None = None) -> Iterator[Path]:
    """Build a package in a temporary sibling of ``final``; rename it into place on success.

    An existing package at ``final`` stays intact until the new one is complete; if the process
    dies, the temporary directory is left behind and removed by the next run. With ``model``
    (the new package's name), a package of another model at ``final`` is refused, not replaced;
    the files a user put in the package it replaces are carried over (:func:`carry_user_files`).
    """
    final = through_link(final)
    check_destination(final, model)  # again (a family checks first): a build must not end in "refusing to replace it"
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise PackageError(f"Cannot make the folder {final.parent}: part of that path is a file.") from None
    except OSError as e:
        _unmakeable(e, f"the folder {shown(final.parent)}")
    clean_debris(final)
    tmp = final.parent / f".{final.name}{_TMP_MARK}{os.getpid()}-{uuid.uuid4().hex[:6]}"
    try:
        tmp.mkdir()
    except OSError as e:
        _unmakeable(e, f"a folder in {shown(final.parent)}")
    try:
        yield tmp
        _fsync_dir(tmp)
        if final.exists():
            _check_target(final)  # again: something may have been put there during the build
            old = final.parent / f".{final.name}{_TMP_MARK}old-{os.getpid()}-{uuid.uuid4().hex[:6]}"
            try:
                os.replace(final, old)
            except OSError as e:  # a mount point that _is_mount could not see: one sentence, not a traceback
                if e.errno == errno.EBUSY:
                    raise _mount_point(final) from None
                raise
            os.replace(tmp, final)
            carry_user_files(old, final)  # after the swap: a kill before it leaves them in old, put back whole
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, final)
        _fsync_dir(final.parent)
    except BaseException as e:
        shutil.rmtree(tmp, ignore_errors=True)
        if (code := no_space(e)) and not getattr(e, "filename", None):  # a write that named no file: the staging
            raise OSError(code, os.strerror(code), os.fspath(tmp)) from None     # folder's (the cli names the user's)
        raise


def no_space(e: BaseException) -> int | None:
    """ENOSPC or EDQUOT where ``e`` is a full disk or quota: an OSError, or a Rust library's plain
    Exception "No space left on device (os error 28)" (the tokenizers' save; review); else None."""
    m = re.search(r"\(os error (\d+)\)$", str(e)) if type(e) is Exception else None
    code = int(m[1]) if m else e.errno if isinstance(e, OSError) else None
    return code if code in (errno.ENOSPC, errno.EDQUOT) else None


def as_umask_allows(path: Path) -> None:
    """Give ``path`` the mode open() gives a new file (0666 less the umask): safetensors writes its
    file 0600, so a package's weights alone were unreadable to the others who could read the rest (review)."""
    mask = 0o022
    with contextlib.suppress(OSError, ValueError, StopIteration), open("/proc/self/status") as status:  # Linux says it unchanged
        mask = next(int(ln.split()[1], 8) for ln in status if ln.startswith("Umask:"))
    os.chmod(path, 0o666 & ~mask)


def check_destination(final: str | os.PathLike, model: str | None = None) -> None:
    """Refuse, before minutes of export, a package folder that cannot be made at ``final``: a
    file or a foreign folder there, with ``model`` (the new package's name) another model's
    package, or a first existing ancestor this user may not write in (the write itself would
    only fail at the end, in staging_dir)."""
    final = through_link(final)
    _check_target(final)
    held = (read_manifest(final) or {}).get("name")
    if model is not None and held is not None and held != model:
        raise PackageError(f"{final} holds the package of another model, {held}; give {model} its own folder (-o DIR), "
                           "or remove that package first.")
    ancestor = final.parent  # the package is staged beside its place
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise PackageError(f"Cannot make the folder {final.parent}: part of that path is a file.")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise PackageError(f"{ancestor} cannot be written: permission denied; the package needs a folder you can write in.")


def read_manifest(folder: Path | None) -> dict | None:
    """The manifest of the package at ``folder`` if a readable one is there (a dict with a
    ``name`` string and a ``variants`` dict), else None: what a look before a refusal or a
    listing needs, not the checks of :class:`edgeai.package.Package`."""
    return look(folder)[0] if folder is not None else None


def look(folder: Path) -> tuple[dict | None, str | None]:
    """``(manifest, None)`` for a package's readable manifest at ``folder``; ``(None, why)`` where
    an edgeai manifest.json is there that cannot be read (a hand edit: not JSON, a key twice;
    read as Package.open reads it); ``(None, None)`` where there is none, or another tool's (a
    Docker image's, a browser extension's), or a folder this user cannot look into."""
    from .package import _read_manifest_file  # package imports this module

    mpath = Path(folder) / MANIFEST
    try:
        if not mpath.is_file():
            return None, None
        m = _read_manifest_file(mpath)
    except PackageError as e:  # one this user may not read is said as such: whose it is cannot be told
        return None, (str(e) if _looks_like_ours(mpath) or unreadable(mpath) else None)
    except OSError as e:  # is_file() raises too where the folder cannot be entered: then no package to speak of
        return None, (f"The manifest {mpath} cannot be read ({e.strerror or type(e).__name__})." if _is_file(mpath) else None)
    ok = isinstance(m, dict) and isinstance(m.get("name"), str) and isinstance(m.get("variants"), dict)
    return (m if ok else None), None


def refuse_variant_file(path: Path) -> None:
    """A package's own variant file, given where a package or a plain .onnx file goes: named as
    such (wrapping it would make a package inside the package)."""
    held = {v.get("file"): k for k, v in (read_manifest(path.parent) or {}).get("variants", {}).items() if isinstance(v, dict)}
    if path.name in held:
        raise PackageError(f"{path} is the {held[path.name]} variant of the package {path.parent}; give the package "
                           f"folder, {shell_arg(path.parent)} (with --variant {held[path.name]} where a command takes one).")


def _is_file(path: Path) -> bool:
    try:
        return path.is_file()
    except OSError:
        return False


def _looks_like_ours(mpath: Path) -> bool:
    """Whether a manifest that does not read is still edgeai's: every one names its variants
    and begins with its schema_version (what a manifest cut short keeps)."""
    try:
        with open(mpath, "rb") as f:
            head = f.read(1 << 20)
    except OSError:
        return False
    return b'"variants"' in head or b'"schema_version"' in head


def _check_target(final: Path) -> None:
    if final.exists() and not final.is_dir():
        raise PackageError(f"{final} is a file; a package is a folder: give a new folder or an existing package.")
    if final.is_dir() and any(final.iterdir()):
        manifest, why = look(final)
        if why:  # a package by its manifest's name, perhaps another model's (its trained weights): never replaced unseen
            raise PackageError(f"{why.removesuffix('.')}; refusing to replace {final} (mend the manifest, or remove the folder first).")
        if manifest is None:
            raise PackageError(f"{final} exists and is not a model package; refusing to replace it.")
    if _is_mount(final):  # a volume (a container's, a disk's): it cannot be renamed, as staging_dir does
        raise _mount_point(final)


def _mount_point(final: Path) -> PackageError:
    return PackageError(f"{final} is a mount point, and a package is built beside its folder and renamed into "
                        f"place: give a folder inside it (-o {shell_arg(final / 'NAME')}).")


_MOUNTINFO = "/proc/self/mountinfo"


def _is_mount(path: Path) -> bool:
    """Whether ``path`` is a mount point. ``os.path.ismount`` compares devices, so a bind mount of a
    folder of the same file system (``docker run -v`` on one disk, ``mount --bind``) is not one to it,
    and the export ended in an EBUSY traceback after all its work (review); Linux lists every mount
    point in /proc/self/mountinfo (its 5th field, with space, tab, newline and backslash as octal)."""
    if os.path.ismount(path):
        return True
    try:
        with open(_MOUNTINFO, encoding="utf-8", errors="surrogateescape") as f:
            rows = [line.split(" ") for line in f]
    except OSError:  # not Linux, or no /proc
        return False
    points = {re.sub(r"\\([0-7]{3})", lambda m: chr(int(m[1], 8)), row[4]) for row in rows if len(row) > 4}
    return os.path.realpath(path) in points


def staging_owner_alive(rest: str) -> bool:
    """Whether the process that made a staging entry still runs; ``rest``: the entry's name after
    ``_TMP_MARK`` (``PID-...`` for a build, ``old-PID-...`` for a package moved aside)."""
    pid = rest.removeprefix("old-").split("-")[0]
    return pid.isdigit() and _alive(int(pid))


def clean_debris(final: Path) -> None:
    """Remove temporary siblings of ``final`` left by killed runs (their process is gone).

    A killed swap (old package moved aside, new one not yet in place) is completed backwards:
    the old package is put back.
    """
    prefix = f".{final.name}{_TMP_MARK}"
    for entry in final.parent.glob(prefix + "*"):
        rest = entry.name[len(prefix):]
        if staging_owner_alive(rest):
            continue
        if rest.startswith("old-") and not final.exists():
            os.replace(entry, final)
        else:
            if rest.startswith("old-") and final.is_dir():  # killed between the swap and the carrying
                carry_user_files(entry, final)
            shutil.rmtree(entry, ignore_errors=True)
    if final.is_dir():
        remove_stale_files(final)


def carry_user_files(old: Path, new: Path) -> list[str]:
    """Move into the rebuilt package ``new`` what the user put in the package ``old`` replaces
    (a README, an evaluation set): every entry that its manifest does not name (the manifest,
    variant files, assets) and that ``new`` does not have; the names moved."""
    manifest = read_manifest(old) or {}
    files = [v.get("file") for v in manifest.get("variants", {}).values() if isinstance(v, dict)]
    files += list(manifest.get("assets") or {})
    owned = {MANIFEST} | {Path(f).parts[0] for f in files if isinstance(f, str) and f}
    moved = []
    for entry in sorted(old.iterdir()):
        name = entry.name
        if name in owned or _VARIANT_FILE.fullmatch(name) or _TMP_MARK in name or os.path.lexists(new / name):
            continue
        with contextlib.suppress(OSError):  # one that cannot be moved goes with the old package, as before
            os.replace(entry, new / name)
            moved.append(name)
    return moved


def remove_stale_files(root: Path) -> list[str]:
    """Inside a package: temporary files of runs that were killed, and variant files that no
    manifest names (a run killed after writing its file, before replacing the manifest)."""
    removed: list[str] = []
    live = False
    for entry in root.iterdir():
        if _TMP_MARK in entry.name and entry.is_file():
            pid = entry.name.split(_TMP_MARK, 1)[1].split("-")[0].split(".")[0]
            if pid.isdigit() and _alive(int(pid)):
                live = True  # another process is writing this package right now
                continue
            entry.unlink(missing_ok=True)
            removed.append(entry.name)
    if live:
        return removed
    # The manifest is read and the files deleted under the write lock: read before it, a variant
    # another writer added in between was not named yet, and was deleted as stale.
    with _lock_if_free(root) as free:
        if not free:  # another process is adding a variant file
            return removed
        try:
            named = {v["file"] for v in read_manifest(root)["variants"].values()}
        except (KeyError, TypeError):  # None, or an entry without a file name
            return removed  # not a readable package: leave its files alone
        for entry in root.iterdir():
            if _VARIANT_FILE.fullmatch(entry.name) and entry.name not in named and entry.is_file():
                entry.unlink(missing_ok=True)
                removed.append(entry.name)
    return removed


@contextlib.contextmanager
def _lock_if_free(root: Path) -> Iterator[bool]:
    """The package's write lock, held for the block when no other process holds it: True; else False."""
    if os.name == "nt":  # pragma: no cover - exercised on Windows only
        yield True
        return
    import fcntl

    fd = os.open(root, os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        yield True
    finally:
        os.close(fd)


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _fsync_file(path: Path) -> None:
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def _fsync_dir(path: Path) -> None:
    if os.name != "posix":
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
