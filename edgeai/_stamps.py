"""Hashes remembered across runs: a model file is hashed once, not on every ``edgeai run``.

Loading checks each file against the sha256 in its manifest (DESIGN.md). Hashing MiniLM's 90 MB
takes ~150 ms, more than the rest of a warm ``edgeai run``. So the result is remembered in
``$EDGEAI_HOME/hashes/`` under the file's identity and state: device, inode, size, mtime and
ctime in nanoseconds. Any write to the file, a copy or a rename over it, and even ``touch -d`` to
put the old mtime back, changes the ctime, which only the kernel sets; a changed stamp means
the file is hashed again. ``EDGEAI_VERIFY=always`` turns the memory off.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path
from typing import Callable

# Smaller files hash in a few milliseconds: not worth a stamp file.
MIN_BYTES = 4 << 20
# Only a file whose ctime is this much in the past gets a stamp: file timestamps are coarse (a
# clock tick), so a write right after hashing could otherwise leave the same ctime behind.
SETTLED_NS = 2_000_000_000


def _stamp_dir() -> Path:
    from .home import home

    return home() / "hashes"


def remembered(path: Path, compute: Callable[[Path], tuple[str, bool]]) -> tuple[str, bool]:
    """``compute(path)``, or what it gave last time if the file has not changed since."""
    st = os.stat(path)
    if st.st_size < MIN_BYTES or os.environ.get("EDGEAI_VERIFY") == "always":
        return compute(path)
    state = [st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns]
    stamp = _stamp_dir() / (hashlib.sha256(os.fsencode(path.resolve())).hexdigest()[:32] + ".json")
    try:
        if not (owned(stamp.parent) and owned(stamp)):
            raise ValueError("not ours")  # a stamp another user could have written proves nothing
        saved = json.loads(stamp.read_text(encoding="utf-8"))
        if saved["state"] == state:
            return str(saved["sha256"]), bool(saved["scan"])
    except (OSError, ValueError, KeyError, TypeError):
        pass
    digest, scan = compute(path)
    if time.time_ns() - st.st_ctime_ns < SETTLED_NS:
        return digest, scan
    try:  # best effort: a read-only cache only costs the next run a hash
        private_dir(stamp.parent)
        tmp = stamp.with_name(f"{stamp.name}.{os.getpid()}.tmp")
        write_private(tmp, json.dumps({"path": str(path), "state": state, "sha256": digest, "scan": scan}))
        os.replace(tmp, stamp)
    except OSError:
        pass
    return digest, scan


def private_dir(path: Path) -> None:
    """Create ``path`` (mode 0o700) for remembered results that only this user may write."""
    path.mkdir(parents=True, exist_ok=True, mode=0o700)


def write_private(path: Path, text: str) -> None:
    """``text`` into a new file at ``path`` that only this user may write (0o600): written by
    ``write_text`` under umask 002, Debian's default for ordinary users, it was group-writable,
    so :func:`owned` never trusted it and every load redid the work it remembers."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
    os.chmod(path, 0o600)  # a file left by a killed run keeps its old mode through O_TRUNC


def owned(path: Path) -> bool:
    """Whether ``path`` belongs to this user and no one else can write it (POSIX; True elsewhere)."""
    if not hasattr(os, "getuid"):  # pragma: no cover - Windows
        return True
    try:
        st = os.stat(path)
    except OSError:
        return False
    return st.st_uid == os.getuid() and not st.st_mode & 0o022
