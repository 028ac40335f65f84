"""The one export path every family takes: PyTorch module -> validated ONNX model package.

A family's build hook gathers what is specific to it into a :class:`Source` (the module, its
tensor specs, pre/post-processing, assets, validation inputs, provenance); :func:`export` does
the rest the same way for all: stage the package in a temporary sibling directory, export with
TorchScript (dynamo as the fallback a source may allow), write the manifest, compare the fp32
ONNX model with PyTorch within the source's :class:`Tolerance`, add the optimized and int8
variants, and rename the package into place.

Importing this module does not import torch; only the functions that export do.
"""

from __future__ import annotations

import importlib
import platform
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

import numpy as np

from edgeai import __version__
from edgeai.atomic import as_umask_allows
from edgeai.errors import ExportError, InputError, a_type
from edgeai.data.compare import with_budget
from edgeai.families import Family
from edgeai.package import SCHEMA_VERSION, Package, file_entry, now, staging_dir, variant_entry, write_manifest

from .onnx_export import name_output_axes

Progress = Callable[[str], None]
Feed = dict[str, Any]  # input name -> numpy array or torch tensor
# The user's accuracy threshold for this export (`edgeai export --budget X`), set by export_model
# around the family's build hook so that every family, a plugin's too, records it without a parameter.
BUDGET: ContextVar[float | None] = ContextVar("edgeai_export_budget", default=None)
OPSET = 17
OPSET_DYNAMO = 18  # the dynamo exporter's lowest opset
PRECISIONS = ("fp32", "int8")


@dataclass(frozen=True)
class Tolerance:
    """How close the fp32 ONNX model must stay to PyTorch on the validation batches.

    ``max_abs_diff`` / ``cosine_min`` judge all batches together (``edgeai.data.compare.compare``);
    ``max_rel_diff`` judges each batch on its own (``check_close``), for models whose batches differ
    in more than the batch axis.
    """

    limit: float
    metric: str = "max_abs_diff"  # max_abs_diff (a ceiling), cosine_min (a floor) or max_rel_diff (a ceiling)


@dataclass
class Source:
    """What a family knows about one model; :func:`export` does everything they share.

    ``example`` and ``batches`` may be callables of the staging directory, for inputs that need
    an asset written first (a tokenizer). Empty ``inputs``/``outputs`` specs are read from the
    exported graph (then ``output_names`` and ``dynamic`` name what the specs would).
    """

    module: Any  # torch.nn.Module in eval mode; forward takes the inputs in order
    name: str
    description: str
    example: Feed | Callable[[Path], Feed]  # what is traced
    batches: list[Feed] | Callable[[Path], list[Feed]]  # what is compared with PyTorch
    tolerance: Tolerance
    checked_on: str = ""  # for the progress line: "on real photos"
    task: str | None = None  # None: the family's default task
    inputs: Sequence[Mapping] = ()
    input_examples: dict | None = None  # name -> the user's example tensor, recorded as example_shape/range
    outputs: Sequence[Mapping] = ()
    output_names: list[str] = field(default_factory=list)
    dynamic: dict[str, dict[int, str]] | None = None  # None: the named axes of the specs
    preprocess: Mapping = field(default_factory=lambda: {"type": "none"})
    postprocess: Mapping = field(default_factory=lambda: {"type": "none"})
    assets: dict[str, bytes | Callable[[Path], None]] = field(default_factory=dict)
    provenance: dict = field(default_factory=dict)  # source, license, architecture (None values are left out)
    versions: tuple[str, ...] = ()  # further modules whose versions the provenance records
    exporter_note: str = ""  # appended to the provenance's exporter, e.g. ", attn_implementation=eager"
    recipe: dict = field(default_factory=dict)
    budget: dict | None = None  # None: the family's
    labels: list[str] = field(default_factory=list)  # how error sentences name each batch (max_rel_diff)
    dynamo_fallback: bool = False  # export again with dynamo when the TorchScript trace froze a size
    held_out: list[str] | None = None  # for optimize/quantize: an exporter's own test texts
    tuning: list[str] | None = None
    calibration: Any = None
    after: Callable[[Package], None] | None = None  # a last step on the finished package
    # Another exporter (Optimum's): writes the fp32 graph at the path and returns (exporter, opset);
    # the graph is then validated against ``module`` like a traced one.
    write_onnx: Callable[[Path], tuple[str, int]] | None = None
    # A validation of its own (generation: step by step with the cache): (accuracy, details).
    validate: Callable[[Path], tuple[dict, dict]] | None = None
    manifest_extra: Callable[[Path], dict] | None = None  # further manifest fields, read from the exported graph
    # What validate saw, for naming the output axes the exporter named itself: per batch, each
    # input's shape and each output's (export/onnx_export.name_output_axes).
    seen: list[tuple[dict, dict]] = field(default_factory=list)


@contextmanager
def user_budget(family: Family, minimum: float | None) -> Iterator[None]:
    """Exports inside record ``minimum`` as the threshold of the family's budget metric."""
    if family.budget is not None:
        with_budget(family.budget.as_manifest(), minimum)  # a bad threshold fails before any work
    token = BUDGET.set(minimum)
    try:
        yield
    finally:
        BUDGET.reset(token)


def say(progress: Progress | None, msg: str) -> None:
    if progress:
        progress(msg)


def check_precision(precision: str) -> None:
    if precision not in PRECISIONS:
        raise InputError(f"Unknown precision {precision!r}; choose fp32 or int8.")


def export(family: Family, src: Source, out, precision: str = "int8", progress: Progress | None = None) -> Package:
    """Write ``src`` as a validated package at ``out``; nothing is left behind on failure."""
    check_precision(precision)
    src.task = src.task or family.task
    target = Path(out)
    with staging_dir(target, src.name) as tmp:
        assets = _write_assets(tmp, src.assets)
        src.example, src.batches = _at(src.example, tmp), _at(src.batches, tmp)
        accuracy, details, exporter, opset = _onnx(src, tmp / "model.onnx", progress)
        manifest = _manifest(family, src, tmp, assets, exporter, opset)
        if src.manifest_extra is not None:
            manifest.update(src.manifest_extra(tmp / "model.onnx"))
        manifest["variants"]["fp32"] = variant_entry(tmp, "model.onnx", made_from=None, accuracy=accuracy,
                                                     accuracy_details=details,
                                                     recipe={"exporter": exporter, "opset": opset, **src.recipe})
        write_manifest(tmp, manifest)
        src.module = None  # free the PyTorch model before quantizing
        pkg = Package.open(tmp)
        _finish(pkg, precision, progress, src.held_out, src.tuning, src.calibration, final=target)
        if src.after:
            src.after(pkg)
    return Package.open(target)


def _budget(family: Family, src: Source) -> dict:
    """The manifest's ``budget`` entry: the source's or the family's, with the user's threshold;
    none for a family without an accuracy metric."""
    budget = src.budget or (family.budget.as_manifest() if family.budget else None)
    return {"budget": with_budget(budget, BUDGET.get())} if budget else {}


def _at(value, stage: Path):
    return value(stage) if callable(value) else value


def _write_assets(tmp: Path, assets: Mapping[str, bytes | Callable[[Path], None]]) -> dict:
    for name, content in assets.items():
        content(tmp / name) if callable(content) else (tmp / name).write_bytes(content)
        as_umask_allows(tmp / name)  # a writer's own mode (safetensors: 0600) is not the package's
    return {name: file_entry(tmp / name) for name in assets}


def _names(specs: Sequence[Mapping]) -> list[str]:
    return [s["name"] for s in specs]


def _axes(specs: Sequence[Mapping]) -> dict[str, dict[int, str]]:
    """Named dynamic axes of tensor specs: the dims given as labels rather than sizes."""
    axes = {s["name"]: {i: d for i, d in enumerate(s.get("shape") or []) if isinstance(d, str)} for s in specs}
    return {n: a for n, a in axes.items() if a}


def _onnx(src: Source, path: Path, progress: Progress | None) -> tuple[dict, dict, str, int]:
    """Export with TorchScript and validate; with ``dynamo_fallback``, export again with dynamo
    when the trace froze a size. Returns (accuracy, accuracy_details, exporter, opset)."""
    from .onnx_export import to_onnx, to_onnx_dynamo

    if src.write_onnx is not None:
        exporter, opset = src.write_onnx(path)
        say(progress, f"validating ONNX fp32 against PyTorch {src.checked_on}".rstrip())
        return (*(src.validate or (lambda p: validate(src, p)))(path), exporter, opset)
    names = _names(src.inputs) or list(src.example)
    outputs = _names(src.outputs) or src.output_names
    dynamic = src.dynamic if src.dynamic is not None else _axes([*src.inputs, *src.outputs])
    args = tuple(_torch(src.example[n]) for n in names)
    labels = sorted({label for axes in dynamic.values() for label in axes.values()})
    say(progress, f"exporting to ONNX (TorchScript exporter{src.exporter_note}; {'dynamic ' + '/'.join(labels) if labels else 'no dynamic axes'})")
    # Traced with autograd on: under no_grad/inference_mode PyTorch takes fused "fast paths"
    # (e.g. nn.TransformerEncoderLayer's native kernel) that have no ONNX form.
    traced = to_onnx(src.module, args, path, names, outputs, dynamic, OPSET)
    say(progress, f"validating ONNX fp32 against PyTorch {src.checked_on}".rstrip())
    try:
        found = validate(src, path)
    except ExportError as first:
        if traced:  # the likely cause, named: the line in the user's code
            first = ExportError(f"{str(first).rstrip('.')}; at {', '.join(traced)} the model turns a tensor into a Python "
                                "value (int(), .item(), an if on a tensor), which the trace freezes to the example's.")
        if not (src.dynamo_fallback and dynamic):
            raise first from None
        # The TorchScript trace froze a size; torch.export keeps symbolic sizes (FACTS.md: it
        # can also fold less, e.g. LSTM weights, so it is the second choice, not the first).
        say(progress, "the TorchScript trace froze a size or a value; exporting again with the dynamo exporter")
        try:
            to_onnx_dynamo(src.module, args, path, names, outputs, dynamic, OPSET_DYNAMO)
            return (*validate(src, path), "dynamo", OPSET_DYNAMO)
        except ExportError:
            raise first from None
    if traced:
        import warnings

        from edgeai.errors import TraceWarning, user_level

        warnings.warn(TraceWarning(
            f"at {', '.join(traced)} the model turns a tensor into a Python value (int(), .item(), an if on a "
            "tensor): the ONNX graph keeps what the example computed there, whatever the input; it matched PyTorch on the "
            "validation inputs, so check it on inputs that take the other path."), stacklevel=user_level())
    return (*found, "torchscript", OPSET)


def _torch(value):
    import torch

    return torch.from_numpy(value) if isinstance(value, np.ndarray) else value


def _numpy(value) -> np.ndarray:
    return value if isinstance(value, np.ndarray) else value.numpy()


def _shapes(feed: Feed) -> str:
    return ", ".join(f"{k} {list(v.shape)}" for k, v in feed.items())


def torch_outputs(module, feed: Feed) -> list[np.ndarray]:
    """The module's outputs on ``feed`` (inputs in forward's order), as float32/int numpy arrays."""
    import torch

    with torch.inference_mode():
        out = module(*[_torch(v) for v in feed.values()])
    if isinstance(out, torch.Tensor):
        out = (out,)
    if not isinstance(out, (tuple, list)) or not all(isinstance(o, torch.Tensor) for o in out):
        odd = next((o for o in (out if isinstance(out, (tuple, list)) else [out]) if not isinstance(o, torch.Tensor)), out)
        raise ExportError(f"The module must return a tensor, a tuple of tensors, or a dict of tensors; it returned "
                          f"{'a ' + type(out).__name__ + ' holding ' if isinstance(out, (tuple, list)) else ''}{'None' if odd is None else a_type(odd)}.")
    return [o.float().numpy() if o.dtype == torch.float16 else o.numpy() for o in out]


def _reference(module, feed: Feed) -> list[np.ndarray]:
    """PyTorch's outputs on a validation input; the module itself failing at another size of a
    --dynamic axis (a Linear over it) is one sentence, not its traceback."""
    from .generic import _first_line

    try:
        return torch_outputs(module, feed)
    except ExportError:
        raise
    except Exception as e:
        raise ExportError(f"The module itself fails at {_shapes(feed)}: {type(e).__name__}: {_first_line(e)} (is every "
                          "--dynamic axis one the model accepts at any size?).") from None


def onnx_runner(path: Path) -> tuple[list[str], Callable[[Feed], list[np.ndarray]]]:
    """(output names, run(feed) -> outputs) on ONNX Runtime's CPU provider, errors as one sentence."""
    import onnxruntime as ort

    from edgeai.session import session_options

    options = session_options(None)
    # A failed run becomes the ExportError sentence below (and may only mean "export again with
    # dynamo"); at the usual severity ONNX Runtime would also log it in red on stderr.
    options.log_severity_level = 4
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    out_names = [o.name for o in session.get_outputs()]

    def run(feed: Feed) -> list[np.ndarray]:
        arrays = {k: _numpy(v) for k, v in feed.items()}
        try:
            return session.run(out_names, arrays)
        except Exception as e:  # ONNX Runtime raises its own Fail/InvalidArgument types
            text = str(e).strip()
            first = (text.splitlines()[0] if text else type(e).__name__)[:300]
            raise ExportError(f"The ONNX export fails at {_shapes(arrays)}: {first} "
                              "(a size was probably frozen during export; mark it with --dynamic).") from None

    return out_names, run


def validate(src: Source, path: Path) -> tuple[dict, dict]:
    """fp32 ONNX vs PyTorch on ``src.batches``: (accuracy, accuracy_details), or an ExportError."""
    import warnings

    from edgeai.data.compare import check_close, compare, per_output, stack

    out_names, run = onnx_runner(path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer and truncation warnings are expected here
        pairs = [(_reference(src.module, feed), run(feed)) for feed in src.batches]
    src.seen = [({k: tuple(np.shape(v)) for k, v in feed.items()}, {n: np.shape(o) for n, o in zip(out_names, got)})
                for feed, (_, got) in zip(src.batches, pairs)]
    tol = src.tolerance
    if tol.metric == "max_rel_diff":
        labels = [*src.labels, *(f"at {_shapes(feed)}" for feed in src.batches[len(src.labels):])]
        worst = max(check_close(r, g, label, tol.limit) for (r, g), label in zip(pairs, labels))
        return {"max_rel_diff": worst, "samples": float(len(pairs))}, {"vs": "pytorch"}
    ref = {n: stack([r[i] for r, _ in pairs]) for i, n in enumerate(out_names)}
    got = {n: stack([g[i] for _, g in pairs]) for i, n in enumerate(out_names)}
    figures = compare(ref, got, src.task)
    if tol.metric == "cosine_min" and figures["cosine_min"] < tol.limit:
        raise ExportError(f"The ONNX export differs from PyTorch: lowest embedding cosine {figures['cosine_min']:.6f} "
                          f"(needed >= {tol.limit}); not writing it.")
    if tol.metric == "max_abs_diff" and figures["max_abs_diff"] > tol.limit:
        raise ExportError(f"The ONNX export differs from PyTorch by {figures['max_abs_diff']:.2e} in the "
                          f"{' and '.join(out_names)} (tolerance {tol.limit:.0e}); not writing it.")
    figures["samples"] = float(len(next(iter(ref.values()))))
    return figures, {"vs": "pytorch", "outputs": per_output(ref, got)}


def _specs(src: Source, path: Path) -> tuple[list[dict], list[dict]]:
    """The source's tensor specs, or, where it leaves them out, the exported graph's."""
    if src.inputs and src.outputs:
        return [dict(s) for s in src.inputs], [dict(s) for s in src.outputs]
    from edgeai.data.graphs import graph_specs

    return graph_specs(path)


def _manifest(family: Family, src: Source, tmp: Path, assets: dict, exporter: str, opset: int) -> dict:
    inputs, outputs = _specs(src, tmp / "model.onnx")
    from edgeai.data.graphs import mark_index_rows

    mark_index_rows(inputs, tmp / "model.onnx")
    if not src.outputs:  # the graph's own specs: axes the exporter named after itself are renamed where it can tell
        name_output_axes(tmp / "model.onnx", inputs, outputs, src.seen)
    for spec in inputs:  # a user model's example: what seeded inputs of it should look like (data/feeds.random_feed)
        if (t := (src.input_examples or {}).get(spec["name"])) is not None and t.numel():
            lo, hi = (float(t.min()), float(t.max())) if t.dtype.is_floating_point else (int(t.min()), int(t.max()))
            spec.update(example_shape=list(t.shape), example_range=[lo, hi])
    provenance = {k: v for k, v in src.provenance.items() if v is not None}
    return {
        "schema_version": SCHEMA_VERSION,
        "name": src.name,
        "family": family.name,
        "task": src.task,
        "description": src.description,
        "inputs": inputs,
        "outputs": outputs,
        "preprocess": dict(src.preprocess),
        "postprocess": dict(src.postprocess),
        **_budget(family, src),
        "assets": assets,
        "variants": {},
        "provenance": {**provenance, "created": now(), "edgeai": __version__, "opset": opset,
                       "exporter": _exporter_line(exporter) + src.exporter_note,
                       "versions": _versions(*src.versions)},
    }


def _exporter_line(exporter: str) -> str:
    if exporter == "optimum":
        from importlib.metadata import version

        return f"Optimum's ONNX exporter (optimum-onnx {version('optimum-onnx')}, torch.onnx.export)"
    return f"torch.onnx.export ({'TorchScript' if exporter == 'torchscript' else exporter})"


def _versions(*extra: str) -> dict[str, str]:
    import onnx
    import onnxruntime
    import torch

    v = {"torch": torch.__version__, "onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__,
         "python": platform.python_version()}
    for mod in extra:
        version = getattr(importlib.import_module(mod), "__version__", None)
        if version is None:  # a namespace package (optimum): its distribution's version
            from importlib.metadata import version as dist_version

            version = dist_version(mod)
        v[mod] = version
    return v


def _finish(pkg: Package, precision: str, progress: Progress | None, held_out: list[str] | None = None,
            tuning: list[str] | None = None, calibration=None, final: Path | None = None) -> None:
    from edgeai.quantize import optimize, quantize, record_latencies

    optimize(pkg, progress=progress, held_out=held_out, measure_latency=False)
    if precision == "int8":
        quantize(pkg, method="auto", calibration=calibration, measure_latency=False, progress=progress,
                 held_out=held_out, tuning=tuning)
        if "generation" in pkg.manifest:  # a decoder's speed is bound by its weights: 4-bit too
            quantize(pkg, precision="int4", measure_latency=False, progress=progress, held_out=held_out, tuning=tuning)
    record_latencies(pkg, progress=progress, source="export", final=final)
