"""Plain ``.onnx`` files: wrapping one in a package, and counting a graph's operators."""

from __future__ import annotations

import os
from pathlib import Path

import onnx

from edgeai import __version__
from edgeai.data.graphs import graph_specs, mark_index_rows
from edgeai.errors import PackageError
from edgeai.package import (
    SCHEMA_VERSION,
    Package,
    now,
    staging_dir,
    variant_entry,
    write_manifest,
)


def wrap_onnx(path: str | os.PathLike, out: str | os.PathLike | None = None) -> Package:
    """Wrap a plain ``.onnx`` file in a package (task ``tensor``) at ``out`` (default: beside it)."""
    src = Path(path)
    try:
        model = onnx.load(str(src))
        onnx.checker.check_model(model)
    except Exception as e:  # noqa: BLE001 -- onnx raises DecodeError, ValidationError, OSError...
        raise PackageError(f"{src} is not a valid ONNX model: {str(e).splitlines()[0] if str(e) else type(e).__name__}.") from None
    target = Path(out) if out else src.with_suffix("")
    if (target / "manifest.json").is_file():
        if (kept := _same_wrap(target, src, model)) is not None:
            return kept
    inputs, outputs = graph_specs(model)
    mark_index_rows(inputs, model)
    from edgeai import families

    budget = families.get("custom").budget  # as for a model exported from PyTorch: `auto` and `inspect` read it
    with staging_dir(target) as tmp:
        onnx.save(model, str(tmp / "model.onnx"))
        manifest = {
            "schema_version": SCHEMA_VERSION,
            "name": src.stem,
            "family": "custom",
            "task": "tensor",
            "inputs": inputs,
            "outputs": outputs,
            "preprocess": {"type": "none"},
            "postprocess": {"type": "none"},
            **({"budget": budget.as_manifest()} if budget is not None else {}),
            "assets": {},
            "variants": {"fp32": variant_entry(tmp, "model.onnx", made_from=None)},
            "provenance": {"source": str(src.resolve()), "created": now(), "edgeai": __version__,
                           "opset": max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default=0)},
        }
        write_manifest(tmp, manifest)
    return Package.open(target)


def _same_wrap(target: Path, src: Path, model) -> Package | None:
    """The package already at ``target``: itself when it wraps this very graph (so `optimize` then
    `quantize` of one .onnx file add to one package), None when it wraps an earlier version of this
    file (rewrapped), else one sentence: another model's package is never replaced."""
    import hashlib

    pkg = Package.open(target)
    fp32 = pkg.variants.get("fp32", {})
    if fp32.get("sha256") == hashlib.sha256(model.SerializeToString()).hexdigest():
        return pkg
    if (pkg.manifest.get("provenance") or {}).get("source") == str(src.resolve()):
        return None
    raise PackageError(f"{target} holds another model's package ({pkg.name}, from "
                       f"{(pkg.manifest.get('provenance') or {}).get('source', '?')}); give -o DIR for {src}'s package.")
