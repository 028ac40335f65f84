"""Plain ``.onnx`` files: wrapping one in a package (checked to run, its sizes recorded)."""

from __future__ import annotations

import os
from pathlib import Path

import onnx

from edgeai import __version__
from edgeai.data.graphs import graph_specs, mark_index_rows, valid_onnx
from edgeai.errors import InputError, PackageError, shell_arg
from edgeai.package import (
    SCHEMA_VERSION,
    Package,
    now,
    refuse_variant_file,
    staging_dir,
    variant_entry,
    write_manifest,
)


def wrap_onnx(path: str | os.PathLike, out: str | os.PathLike | None = None,
              arrays: str | os.PathLike | None = None) -> Package:
    """Wrap a plain ``.onnx`` file in a package (task ``tensor``) at ``out`` (default: beside it).
    ``arrays``: a folder of .npy/.npz feeds (``--calibration``), whose shapes give the sizes of
    named axes other than the batch (recorded as each input's ``example_shape``)."""
    src = Path(path)
    refuse_variant_file(src)
    model = valid_onnx(src)
    target = Path(out) if out else src.with_suffix("")
    if (target / "manifest.json").is_file():
        if (kept := _same_wrap(target, src, model)) is not None:
            return kept
        replaced = list(Package.open(target).variants)  # an earlier version of this file: said once rewrapped
    else:
        replaced = None
    inputs, outputs = graph_specs(model)
    mark_index_rows(inputs, model)
    _check_runs(inputs, src, arrays)
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
            "variants": {"fp32": variant_entry(tmp, "model.onnx", made_from=None, **_as_given(tmp / "model.onnx"))},
            "provenance": {"source": str(src.resolve()), "created": now(), "edgeai": __version__,
                           "opset": max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default=0)},
        }
        write_manifest(tmp, manifest)
    if replaced is not None:
        import warnings

        from edgeai.errors import EdgeAIWarning, user_level

        warnings.warn(EdgeAIWarning(f"{src} has changed since it was wrapped into {target}: its package is made anew, "
                                    f"replacing its variants ({', '.join(replaced)})"), stacklevel=user_level())
    return Package.open(target)


def _as_given(path: Path) -> dict:
    """The base variant is the file as given and is called ``fp32`` (what every other variant is
    made from and measured against); a half-precision graph says so in its recipe, which
    ``inspect`` prints, rather than pass for float32."""
    from .recipes import _weights_in_float16

    return {"recipe": {"weights": "float16", "note": "the file as given; fp32 names the base variant"}} \
        if _weights_in_float16(path) else {}


def _check_runs(inputs: list[dict], src: Path, arrays: str | os.PathLike | None) -> None:
    """That ONNX Runtime loads the graph, and the sizes that checks and timings feed a named axis
    other than the batch: the user's arrays' where given, else the default of seeded feeds (16),
    which the graph must then run with. An exporter's names say nothing of sizes (Optimum writes
    ``num_channels``, ``height``, ``width`` even where the weights fix them), so a refusal here
    comes before any package is written, not as an ONNX Runtime node error after it."""
    import onnxruntime as ort

    from edgeai.data.feeds import OTHER_AXIS, feeds_from_dir, random_feed
    from edgeai.session import ort_detail

    options = ort.SessionOptions()
    options.log_severity_level = 4  # a failure is said below, once
    try:  # every graph: a newer IR version or an unknown op is said here, not by a quantizer's temporary copy
        session = ort.InferenceSession(str(src), options, providers=["CPUExecutionProvider"])
    except Exception as e:  # noqa: BLE001 -- ONNX Runtime raises its own Fail/InvalidGraph/...
        raise PackageError(f"ONNX Runtime {ort.__version__} cannot load {src} ({ort_detail(e)[:300]}).") from None
    named = {s["name"]: [d for d in s["shape"][1:] if not isinstance(d, int)] for s in inputs}
    if not any(named.values()):
        return
    if arrays is not None:
        feed = feeds_from_dir(arrays, [s["name"] for s in inputs], inputs)[0]
        for spec in inputs:
            spec["example_shape"] = [int(n) for n in feed[spec["name"]].shape]
        return
    try:
        session.run(None, random_feed(inputs))
    except Exception as e:  # noqa: BLE001 -- ONNX Runtime raises its own Fail/InvalidArgument/RuntimeException
        axes = ", ".join(dict.fromkeys(d for ds in named.values() for d in ds))
        # the sizes or the seeded values (ids past a vocabulary, say): ONNX Runtime's words tell which
        raise InputError(f"{src.name} does not run on seeded inputs with its named axes besides the batch ({axes}) set to "
                         f"{OTHER_AXIS} (ONNX Runtime: {ort_detail(e)[:300]}); give real inputs: "
                         f"`edgeai quantize {shell_arg(src)} --calibration DIR` with .npy/.npz arrays of them.") from None


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
