"""The model package: a directory with ``manifest.json`` and the files it names.

Every stage reads and writes one of these (see DESIGN.md). This module owns reading (schema
check, safe paths, hash checks) and writing (atomic: a new package is built in a temporary
sibling directory and renamed into place; a new variant writes its file first and replaces
``manifest.json`` last).
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
import json
import os
import re
import shutil
import uuid
from functools import cached_property
from importlib import resources
from pathlib import Path
from typing import Any, Iterator

from . import _schema
from .errors import PackageError

MANIFEST = "manifest.json"
SCHEMA_VERSION = 4
KNOWN_SCHEMA_VERSIONS = (1, 2, 3, 4)
MAX_MANIFEST_BYTES = 1 << 20  # a real manifest is a few KB; refuse to parse megabytes of JSON
VARIANTS = ("fp32", "optimized", "int8", "fp16")
_TMP_MARK = ".edgeai-tmp-"
# The names add_variant gives variant files (fp32: model.<sha12>.onnx).
_VARIANT_FILE = re.compile(r"model(\.(optimized|int8|fp16))?\.[0-9a-f]{12}\.onnx")


def load_schema() -> dict:
    return json.loads(resources.files("edgeai").joinpath("manifest.schema.json").read_text())


def sha256_file(path: str | os.PathLike) -> str:
    return _hash_and_scan(path)[0]


# An ONNX file can only refer to external data through a StringStringEntryProto whose key is
# "location", so a file without these bytes has none, and the full parse can be skipped.
_EXTERNAL_KEY = b"location"


def _hash_and_scan(path: str | os.PathLike) -> tuple[str, bool]:
    """sha256 of a file, and whether the bytes ``location`` occur in it (in the same one read)."""
    digest = hashlib.sha256()
    found, tail = False, b""
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
            if not found:
                found = _EXTERNAL_KEY in tail + chunk
                tail = chunk[-len(_EXTERNAL_KEY) :]
    return digest.hexdigest(), found


def now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat()


def safe_path(root: Path, rel: str) -> Path:
    """Resolve ``rel`` inside ``root``; refuse absolute paths, ``..`` and symlinks that leave it."""
    if not rel or os.path.isabs(rel) or rel.startswith(("/", "\\")) or ":" in rel:
        raise PackageError(f"The package at {root} names the path {rel!r}, which is not a relative path inside the package.")
    if any(part == ".." for part in Path(rel.replace("\\", "/")).parts):
        raise PackageError(f"The package at {root} names the path {rel!r}, which leaves the package directory.")
    real_root = root.resolve()
    target = (real_root / rel).resolve()
    if target != real_root and real_root not in target.parents:
        raise PackageError(f"The package at {root} names the path {rel!r}, which resolves outside the package (a symlink?).")
    return target


class Package:
    """A model package on disk. Cheap to construct: reading and checks happen in :meth:`open`."""

    def __init__(self, path: Path, manifest: dict):
        self.path = path
        self.manifest = manifest

    # -- reading ---------------------------------------------------------------------------
    @classmethod
    def open(cls, path: str | os.PathLike) -> "Package":
        root = Path(path)
        if root.is_file() and root.name == MANIFEST:
            root = root.parent
        if not root.exists():
            raise PackageError(f"No model package at {root}: the path does not exist.")
        if not root.is_dir():
            raise PackageError(f"{root} is a file, not a model package directory (a directory with {MANIFEST}).")
        mpath = root / MANIFEST
        if not mpath.is_file():
            raise PackageError(f"{root} is not a model package: it has no {MANIFEST}.")
        size = mpath.stat().st_size
        if size > MAX_MANIFEST_BYTES:
            raise PackageError(f"The manifest {mpath} is {size} bytes, far larger than a manifest can be (limit {MAX_MANIFEST_BYTES}).")
        try:
            manifest = json.loads(mpath.read_bytes().decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise PackageError(f"The manifest {mpath} is not valid JSON ({e}).") from None
        if not isinstance(manifest, dict):
            raise PackageError(f"The manifest {mpath} should hold a JSON object, not {type(manifest).__name__}.")
        version = manifest.get("schema_version")
        if version not in KNOWN_SCHEMA_VERSIONS:
            raise PackageError(
                f"The manifest {mpath} has schema_version {version!r}; this edgeai reads {list(KNOWN_SCHEMA_VERSIONS)}."
            )
        problems = _schema.validate(manifest, load_schema())
        if version == 1 and not problems and (
            manifest.get("preprocess", {}).get("type") == "text" or manifest.get("postprocess", {}).get("type") == "embedding"
        ):
            problems = ["text preprocessing and embedding postprocessing need schema_version 2"]
        if problems:
            more = f" (and {len(problems) - 1} more problems)" if len(problems) > 1 else ""
            raise PackageError(f"The manifest {mpath} is invalid: {problems[0]}{more}.")
        pkg = cls(root, manifest)
        for rel in pkg._all_paths():
            safe_path(root, rel)
        return pkg

    def _all_paths(self) -> list[str]:
        paths = [v["file"] for v in self.manifest["variants"].values()]
        return paths + list(self.manifest.get("assets", {}))

    @property
    def name(self) -> str:
        return self.manifest["name"]

    @property
    def task(self) -> str:
        return self.manifest["task"]

    @property
    def variants(self) -> dict[str, dict]:
        return self.manifest["variants"]

    def variant(self, name: str) -> dict:
        if name not in self.variants:
            raise PackageError(f"The package {self.path} has no {name!r} variant; it has {sorted(self.variants)}.")
        return self.variants[name]

    def verified_file(self, rel: str, sha256: str, onnx_model: bool = False) -> Path:
        """The absolute path of ``rel`` after checking that it exists and matches ``sha256``;
        for a model, also that any external data it names is a listed, verified file of the package."""
        path = safe_path(self.path, rel)
        if not path.is_file():
            raise PackageError(f"The package {self.path} is missing its file {rel}.")
        actual, maybe_external = _hash_and_scan(path)
        if actual != sha256:
            raise PackageError(
                f"The file {rel} in {self.path} does not match the sha256 in its manifest "
                f"(expected {sha256[:12]}..., found {actual[:12]}...): it was changed or damaged after packaging."
            )
        if onnx_model and maybe_external:
            self._check_external_data(path, rel)
        return path

    def _check_external_data(self, path: Path, rel: str) -> None:
        """Every external-data file of the model must be inside the package and listed (with its
        hash) under assets; ONNX Runtime would otherwise read whatever file the model names."""
        import onnx

        try:
            model = onnx.load(str(path), load_external_data=False)
        except Exception as e:  # DecodeError and friends: a damaged file that still matched its hash
            raise PackageError(f"The model file {rel} in {self.path} is not a valid ONNX file ({type(e).__name__}).") from None
        base = Path(rel).parent
        for tensor in _all_tensors(model.graph):
            if tensor.data_location != onnx.TensorProto.EXTERNAL:
                continue
            location = next((e.value for e in tensor.external_data if e.key == "location"), "")
            data_rel = (base / location).as_posix() if location and not os.path.isabs(location) else location
            safe_path(self.path, data_rel)  # refuses absolute paths, "..", symlinks out
            assets = self.manifest.get("assets", {})
            key = os.path.normpath(data_rel).replace(os.sep, "/")
            if key not in assets:
                raise PackageError(
                    f"The model file {rel} in {self.path} reads external data from {location!r}, "
                    "which the manifest does not list (with its hash) under assets."
                )
            self.verified_file(key, assets[key]["sha256"])

    def variant_path(self, name: str) -> Path:
        info = self.variant(name)
        return self.verified_file(info["file"], info["sha256"], onnx_model=True)

    def asset_path(self, rel: str) -> Path:
        assets = self.manifest.get("assets", {})
        if rel not in assets:
            raise PackageError(f"The package {self.path} names {rel!r} but does not list it (with its hash) under assets.")
        return self.verified_file(rel, assets[rel]["sha256"])

    @cached_property
    def labels(self) -> list[str] | None:
        rel = self.manifest.get("postprocess", {}).get("labels")
        if rel is None:
            return None
        return self.asset_path(rel).read_text(encoding="utf-8").splitlines()

    # -- writing ---------------------------------------------------------------------------
    def add_variant(self, name: str, src: Path, info: dict[str, Any]) -> dict:
        """Move ``src`` into the package as variant ``name`` and update the manifest atomically.

        The file gets a name derived from its hash, so a crash before the manifest is replaced
        leaves the old manifest pointing at the old, intact file.
        """
        digest = sha256_file(src)
        rel = f"model.{name}.{digest[:12]}.onnx" if name != "fp32" else f"model.{digest[:12]}.onnx"
        dest = self.path / rel
        os.replace(src, dest)
        _fsync_file(dest)
        old = self.variants.get(name)
        entry = {"file": rel, "sha256": digest, "size": dest.stat().st_size, "created": now(), **info}
        manifest = {**self.manifest, "schema_version": SCHEMA_VERSION}  # each version reads as the next
        manifest["variants"] = {**self.variants, name: entry}
        write_manifest(self.path, manifest)
        self.manifest = manifest
        if old and old["file"] != rel and old["file"] not in self._all_paths():
            with contextlib.suppress(OSError):
                safe_path(self.path, old["file"]).unlink()
        return entry

    def update(self, **fields: Any) -> None:
        manifest = {**self.manifest, "schema_version": SCHEMA_VERSION, **fields}
        write_manifest(self.path, manifest)
        self.manifest = manifest


def _all_tensors(graph) -> Iterator:
    """Every tensor a graph stores: initializers, constant attributes, and those of subgraphs."""
    yield from graph.initializer
    for sparse in graph.sparse_initializer:
        yield sparse.values
        yield sparse.indices
    for node in graph.node:
        for attr in node.attribute:
            if attr.HasField("t"):
                yield attr.t
            yield from attr.tensors
            if attr.HasField("g"):
                yield from _all_tensors(attr.g)
            for sub in attr.graphs:
                yield from _all_tensors(sub)


def write_manifest(root: Path, manifest: dict) -> None:
    problems = _schema.validate(manifest, load_schema())
    if problems:  # a bug in edgeai, not a user error: keep the traceback
        raise AssertionError(f"refusing to write an invalid manifest: {problems}")
    tmp = root / f"{MANIFEST}{_TMP_MARK}{os.getpid()}-{uuid.uuid4().hex[:8]}"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(manifest, f, indent=2, sort_keys=False)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, root / MANIFEST)
    _fsync_dir(root)


def file_entry(path: Path) -> dict:
    return {"sha256": sha256_file(path), "size": path.stat().st_size}


def variant_entry(root: Path, rel: str, **info: Any) -> dict:
    """The manifest entry of a variant file already inside the package at ``root``."""
    return {"file": rel, **file_entry(root / rel), "created": now(), **info}


@contextlib.contextmanager
def staging_dir(final: Path) -> Iterator[Path]:
    """Build a package in a temporary sibling of ``final``; rename it into place on success.

    An existing package at ``final`` stays intact until the new one is complete; if the process
    dies, the temporary directory is left behind and removed by the next run.
    """
    final = Path(final).absolute()
    final.parent.mkdir(parents=True, exist_ok=True)
    clean_debris(final)
    tmp = final.parent / f".{final.name}{_TMP_MARK}{os.getpid()}-{uuid.uuid4().hex[:6]}"
    tmp.mkdir()
    try:
        yield tmp
        _fsync_dir(tmp)
        if final.exists():
            if not (final / MANIFEST).is_file() and any(final.iterdir()):
                raise PackageError(f"{final} exists and is not a model package; refusing to replace it.")
            old = final.parent / f".{final.name}{_TMP_MARK}old-{os.getpid()}-{uuid.uuid4().hex[:6]}"
            os.replace(final, old)
            os.replace(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, final)
        _fsync_dir(final.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def clean_debris(final: Path) -> None:
    """Remove temporary siblings of ``final`` left by killed runs (their process is gone).

    A killed swap (old package moved aside, new one not yet in place) is completed backwards:
    the old package is put back.
    """
    prefix = f".{final.name}{_TMP_MARK}"
    for entry in final.parent.glob(prefix + "*"):
        rest = entry.name[len(prefix):]
        is_old = rest.startswith("old-")
        pid = rest.removeprefix("old-").split("-")[0]
        if pid.isdigit() and _alive(int(pid)):
            continue
        if is_old and not final.exists():
            os.replace(entry, final)
        else:
            shutil.rmtree(entry, ignore_errors=True)
    if final.is_dir():
        remove_stale_files(final)


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
    try:
        manifest = json.loads((root / MANIFEST).read_text(encoding="utf-8"))
        named = {v["file"] for v in manifest["variants"].values()}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return removed  # not a readable package: leave its files alone
    if not live:
        for entry in root.iterdir():
            if _VARIANT_FILE.fullmatch(entry.name) and entry.name not in named and entry.is_file():
                entry.unlink(missing_ok=True)
                removed.append(entry.name)
    return removed


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
