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
import uuid
from functools import cached_property
from importlib import resources
from pathlib import Path
from typing import Any, Callable, Iterator

from . import _schema
from .atomic import (  # noqa: F401  (re-exported: the writing side of a package)
    _TMP_MARK,
    MANIFEST,
    _fsync_dir,
    _fsync_file,
    clean_debris,
    package_lock,
    refuse_variant_file,
    remove_stale_files,
    staging_dir,
)
from .errors import PackageError, shell_arg, unreadable

SCHEMA_VERSION = 8
KNOWN_SCHEMA_VERSIONS = (1, 2, 3, 4, 5, 6, 7, 8)
MAX_MANIFEST_BYTES = 1 << 20  # a real manifest is a few KB; refuse to parse megabytes of JSON
VARIANTS = ("fp32", "optimized", "int8", "fp16", "int4")


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
        if not str(path).strip():  # Path("") is "." (an unset variable): not the current folder
            raise PackageError("The package path is empty; give a package directory.")
        root = Path(path)
        if root.is_file() and root.name == MANIFEST:
            root = root.parent
        if not root.exists():
            raise PackageError(f"No model package at {root}: the path does not exist.")
        if not root.is_dir():
            refuse_variant_file(root)  # wrapping it (the advice below) made a package inside the package (review)
            if root.suffix == ".onnx":  # wrapping writes files: a stage does it (quantize/wrap.py), not a reader
                from .data.graphs import valid_onnx

                valid_onnx(root)  # or the advice below leads to a second error (review)
                raise PackageError(f"{root} is a plain ONNX file, not a package: `edgeai optimize {shell_arg(root)}` wraps it in the "
                                   f"package {root.with_suffix('')} (and adds its optimized graph); run that.")
            raise PackageError(f"{root} is a file, not a model package directory (a directory with {MANIFEST}).")
        mpath = root / MANIFEST
        if not mpath.is_file():
            raise PackageError(f"{root} is not a model package: it has no {MANIFEST}.")
        manifest = _read_manifest_file(mpath)
        version = manifest.get("schema_version")
        if version not in KNOWN_SCHEMA_VERSIONS:  # "8", a string: not "has '8'; this edgeai reads [..., 8]" (review)
            kind = f" should be an integer, not {type(version).__name__}" if not isinstance(version, int) and version is not None else ""
            raise PackageError(f"The manifest {mpath} has schema_version {version!r}{kind}; this edgeai reads {list(KNOWN_SCHEMA_VERSIONS)}.")
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
            raise PackageError(f"The package {self.path} has no {name!r} variant; it has {', '.join(sorted(self.variants))}.")
        return self.variants[name]

    def verified_file(self, rel: str, sha256: str, onnx_model: bool = False) -> Path:
        """The absolute path of ``rel`` after checking that it exists and matches ``sha256``;
        for a model, also that any external data it names is a listed, verified file of the package."""
        path = safe_path(self.path, rel)
        if not path.is_file():
            raise PackageError(f"The package {self.path} is missing its file {rel}.")
        from ._stamps import remembered

        if why := unreadable(path):
            raise PackageError(f"The model file {why}" if onnx_model else f"The package's file {why}")
        actual, maybe_external = remembered(path, _hash_and_scan)
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

    def damaged_assets(self) -> dict[str, str]:
        """Asset path -> what is wrong with it ("is missing", "was changed..."): the files besides
        the variants (tokenizer, an encoder-decoder's encoder, external data), which ``inspect``,
        ``report`` and ``bench`` check as they check the variants (:meth:`damage_sentence`)."""
        bad = {}
        for rel, info in self.manifest.get("assets", {}).items():
            try:
                self.verified_file(rel, info["sha256"])
            except PackageError:
                bad[rel] = ("is missing" if not safe_path(self.path, rel).is_file() else
                            "does not match its sha256 (changed or damaged after packaging)")
        return bad

    @staticmethod
    def damage_list(files: dict[str, str]) -> str:
        """``"tokenizer.json is missing; ..."``: :meth:`damaged_assets` as a clause (the report's note uses it too)."""
        return "; ".join(f"{rel} {why}" for rel, why in files.items())

    def damage_sentence(self, files: dict[str, str]) -> str:
        """One sentence for :meth:`damaged_assets`."""
        return (f"The package {self.path} has {len(files)} missing or damaged file(s) besides its variants: "
                f"{self.damage_list(files)}; copy the package again (or export it again).")

    def variant_path(self, name: str) -> Path:
        info = self.variant(name)
        try:
            return self.verified_file(info["file"], info["sha256"], onnx_model=True)
        except PackageError as e:  # name another variant whose file is whole (checked: the error path only), exact ones first
            other = next((v for v in dict.fromkeys(("fp32", "optimized", *self.variants)) if v != name and v in self.variants
                          and not self.damaged(v)), None)
            if other is None:
                raise
            raise PackageError(f"{str(e).rstrip('.')}; the {other} variant is intact (--variant {other}, or variant=\"{other}\").") from None

    def damaged(self, name: str) -> bool:
        try:
            self.verified_file(self.variants[name]["file"], self.variants[name]["sha256"], onnx_model=True)
            return False
        except PackageError:
            return True

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
    def locked(self, timeout: float | None = None) -> "contextlib.AbstractContextManager[None]":
        """Hold the package's write lock (see :func:`package_lock`)."""
        return package_lock(self.path, timeout)

    def edit(self, change: Callable[[dict], dict]) -> dict:
        """Read-modify-write of ``manifest.json`` under the package's lock: ``change`` gets the
        manifest as it is on disk now (another process may have added a variant since this
        object read it) and returns the new one, which replaces the file atomically."""
        with self.locked():
            return self._edit_locked(change)

    def _edit_locked(self, change: Callable[[dict], dict]) -> dict:
        current = _read_manifest_file(self.path / MANIFEST)
        manifest = {**change(current), "schema_version": SCHEMA_VERSION}  # each version reads as the next
        write_manifest(self.path, manifest)
        self.manifest = manifest
        return manifest

    def add_variant(self, name: str, src: Path, info: dict[str, Any], fields: dict[str, Any] | None = None,
                    check: Callable[[dict], None] | None = None) -> dict:
        """Move ``src`` into the package as variant ``name`` and update the manifest atomically
        (with ``fields``, top-level manifest fields the variant was made under: ``--budget``).
        ``check`` gets the manifest as it is on disk, under the lock, and may raise to keep it.

        The file gets a name derived from its hash, so a crash before the manifest is replaced
        leaves the old manifest pointing at the old, intact file.
        """
        digest = sha256_file(src)
        rel = f"model.{name}.{digest[:12]}.onnx" if name != "fp32" else f"model.{digest[:12]}.onnx"
        dest = self.path / rel
        entry: dict[str, Any] = {}
        replaced: list[dict] = []

        def change(m: dict) -> dict:
            if check:
                check(m)
            replaced.extend(v for v in [m["variants"].get(name)] if v)
            return {**m, **(fields or {}), "variants": {**m["variants"], name: entry}}

        # The file is moved in under the lock too: another writer's clean-up (remove_stale_files)
        # would otherwise see a variant file no manifest names yet, and delete it.
        with self.locked():
            existed = dest.exists()  # the same bytes as a variant already there: never delete that one
            os.replace(src, dest)
            _fsync_file(dest)
            entry.update({"file": rel, "sha256": digest, "size": dest.stat().st_size, "created": now(), **info})
            try:
                self._edit_locked(change)
            except BaseException:
                if not existed:
                    dest.unlink(missing_ok=True)  # not named by any manifest: never leave it orphaned
                raise
            # The replaced file goes under the same lock: after it, another writer may add a
            # variant with those very bytes (the same hashed name) that this would then delete.
            old = replaced[0] if replaced else None
            if old and old["file"] != rel and old["file"] not in self._all_paths():
                with contextlib.suppress(OSError):
                    safe_path(self.path, old["file"]).unlink()
        return entry

    def update(self, **fields: Any) -> None:
        """Replace top-level manifest fields (under the lock; use :meth:`edit` to merge)."""
        self.edit(lambda m: {**m, **fields})


class _DuplicateKey(Exception):
    pass


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict:
    """json's object hook: Python keeps the last of two equal keys silently (a hand-edited
    latency or budget pasted below the old one); edgeai never writes one twice."""
    out: dict = {}
    for k, v in pairs:
        if k in out:
            raise _DuplicateKey(k)
        out[k] = v
    return out


def _read_manifest_file(mpath: Path) -> dict:
    if why := unreadable(mpath):  # a PermissionError traceback from load() (review)
        raise PackageError(f"The manifest {why}")
    size = mpath.stat().st_size
    if size > MAX_MANIFEST_BYTES:
        raise PackageError(f"The manifest {mpath} is {size} bytes, far larger than a manifest can be (limit {MAX_MANIFEST_BYTES}).")
    try:  # a byte-order mark (Notepad's) is not an error
        manifest = json.loads(mpath.read_bytes().decode("utf-8-sig"), object_pairs_hook=_unique_keys)
    except _DuplicateKey as e:
        raise PackageError(f"The manifest {mpath} names {e.args[0]!r} twice in one object; JSON readers keep only one of "
                           "them, so which one was meant is unknown (a hand edit?).") from None
    except ValueError as e:  # not UTF-8, not JSON, or an integer of more than 4300 digits (Python's limit)
        raise PackageError(f"The manifest {mpath} is not valid JSON ({e}).") from None
    except RecursionError:  # "[[[[...]]]]" within the size limit
        raise PackageError(f"The manifest {mpath} nests its JSON deeper than a manifest can.") from None
    if not isinstance(manifest, dict):
        raise PackageError(f"The manifest {mpath} should hold a JSON object, not {type(manifest).__name__}.")
    return manifest


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
    if problems := _schema.validate(manifest, load_schema()):  # a bug in edgeai, not a user error: keep the traceback
        raise AssertionError(f"refusing to write an invalid manifest: {problems}")
    tmp = root / f".{MANIFEST}{_TMP_MARK}{os.getpid()}-{uuid.uuid4().hex[:8]}"  # hidden: a refusal names the folder (cli)
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(json.dumps(manifest, indent=2, sort_keys=False) + "\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, root / MANIFEST)
    except OSError as e:  # a full disk at write or flush names no file: the package's (review: bench --record)
        raise OSError(e.errno, e.strerror, e.filename or os.fspath(tmp)) from None
    finally:  # a full disk or Ctrl-C half-way: no half-written manifest left in the package (review)
        tmp.unlink(missing_ok=True)
    _fsync_dir(root)


def file_entry(path: Path) -> dict:
    return {"sha256": sha256_file(path), "size": path.stat().st_size}


def variant_entry(root: Path, rel: str, **info: Any) -> dict:
    """The manifest entry of a variant file already inside the package at ``root``."""
    return {"file": rel, **file_entry(root / rel), "created": now(), **info}


def factory_key(source: str) -> tuple[str, str]:
    """``("models.py", "make")`` for a package made from ``path/to/models.py:make`` (a moved
    checkout is the same factory); any other source (a class name, an .onnx file) as it is."""
    file, colon, fn = source.rpartition(":")
    return (Path(file).name, fn) if colon and file.endswith(".py") else (source, "")
