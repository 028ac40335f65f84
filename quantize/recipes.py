"""``quantize()`` and ``to_fp16()``: check the arguments, look the step up, hand it to the runner."""

from __future__ import annotations

import os
from pathlib import Path

from edgeai.data.feeds import input_kind
from edgeai.errors import InputError
from edgeai.package import Package

from . import CALIBRATIONS, FP16_SOURCES, METHODS, PRECISIONS, PRESETS
from .runner import Context, Progress, Step, opened, run_step
from .steps.budget_search import BudgetSearch
from .steps.dynamic import Dynamic
from .steps.fp16 import Float16
from .steps.int4 import Int4
from .steps.qat import QuantizationAware
from .steps.static_qdq import StaticQDQ
from .steps.tensorrt import TensorRTQDQ

# (precision, preset, method, input kind) -> step; "*" matches any input kind.
STEPS: dict[tuple[str, str, str, str], Step] = {
    ("int8", "cpu", "static", "*"): StaticQDQ(),
    ("int8", "cpu", "qat", "*"): QuantizationAware(),
    ("int8", "cpu", "dynamic", "*"): Dynamic(),
    ("int8", "cpu", "dynamic", "text"): BudgetSearch(),
    ("int8", "tensorrt", "static", "*"): TensorRTQDQ(),
    ("fp16", "cpu", "auto", "*"): Float16(),
    ("int4", "cpu", "auto", "*"): Int4(),
}


def quantize(
    pkg: str | os.PathLike | Package,
    method: str = "auto",
    calibration: str | os.PathLike | None = None,
    out: str | os.PathLike | None = None,
    per_channel: bool = True,
    measure_latency: bool = True,
    progress: Progress | None = None,
    held_out: list[str] | None = None,
    tuning: list[str] | None = None,
    precision: str = "int8",
    preset: str = "cpu",
    made_from: str | None = None,
    budget: float | None = None,
    qat_steps: int | None = None,
    replace: bool = False,
    calibrate: str | None = None,
) -> Package:
    """Add the ``int8`` variant and record its accuracy against fp32 and its CPU latency.

    ``precision="fp16"`` adds the ``fp16`` variant instead (see :func:`to_fp16`; ``made_from``
    picks its source). ``preset="tensorrt"`` makes the int8 variant TensorRT accepts: static
    QDQ with symmetric int8 weights *and* activations (ONNX Runtime's CPU default, uint8
    activations with a zero point, is refused by TensorRT).

    For text models ``tuning``/``held_out`` replace the built-in sentence sets (edgeai.data.texts):
    the search for layers to keep in float looks only at ``tuning``, the recorded accuracy
    only at ``held_out``.

    ``budget`` sets the package's accuracy threshold for its metric (``--budget``): the new
    variant is made and judged under it, and it is recorded with the variant.

    A new variant that misses the budget does not replace one within it (an InputError says
    so, and nothing is written) unless ``replace``.

    ``method``: ``static`` (QDQ, per-channel int8 weights, uint8 activations calibrated on real
    inputs), ``dynamic`` (int8 weights, activations quantized at run time), ``qat`` (image models
    with a PyTorch reference: ``qat_steps`` of quantization-aware fine-tuning distilled from fp32
    on the calibration photos, then static; see steps/qat.py), or ``auto``: static when
    calibration inputs exist for the package (images), dynamic otherwise.

    ``calibrate``: static INT8's calibrator, ``minmax`` (default) or ``percentile`` (ONNX
    Runtime's). MinMax is the default by measurement (benchmarks/results/cnn-int8-ptq.md: on
    EfficientNet-Lite0 percentile agrees no better with fp32 and calibrates 10-20x slower); a
    model with rare extreme activations may do better with it: compare the recorded agreement
    (``--replace`` keeps the last one made).
    """
    _check(precision, preset, method)
    if calibrate is not None:
        if calibrate not in CALIBRATIONS:
            raise InputError(f"Unknown calibration method {calibrate!r}; choose {' or '.join(CALIBRATIONS)}.")
        if precision != "int8" or method == "dynamic" or (method == "qat" and calibrate != "minmax"):
            raise InputError("--calibrate picks static INT8's calibrator: " + (
                "dynamic INT8 measures activations as they come, so there is nothing to calibrate." if method == "dynamic" else
                "the quantization-aware fine-tune learns on MinMax's grid, so it calibrates by MinMax." if method == "qat" else
                f"it does not apply to {precision}."))
    named = Path(calibration).name.lower() if calibration is not None and not Path(calibration).exists() else None
    if named in (*CALIBRATIONS, "entropy"):
        # `--calibration minmax` for `--calibrate minmax`: the folder's "does not exist" would not say so
        raise InputError(f"--calibration takes a directory of calibration inputs, and {calibration} names a calibrator: "
                         + ("ONNX Runtime's entropy calibrator is not offered (here it gives MinMax's ranges); "
                            f"--calibrate picks {' or '.join(CALIBRATIONS)}." if named == "entropy" else f"use --calibrate {named}."))
    if qat_steps is not None and (method != "qat" or qat_steps < 1):
        raise InputError("--qat-steps applies to --method qat and must be at least 1." if method == "qat"
                         else "--qat-steps applies to --method qat.")
    if precision != "int8" and (method != "auto" or calibration is not None or preset != "cpu"):
        raise InputError("fp16 is a conversion of the graph: --method, --calibration and --preset apply to int8 only."
                         if precision == "fp16" else
                         "int4 is weight-only: --method, --calibration and --preset apply to int8 only.")
    if made_from is not None and precision != "fp16":
        raise InputError("made_from applies to fp16; int8 is made from the graph its method needs.")
    if preset == "tensorrt" and method in ("dynamic", "qat"):
        raise InputError("TensorRT runs only static INT8 (calibrated QDQ); use --method static or auto with --preset tensorrt.")
    # checked before the package is opened; a refusal after it removes a package this command wrapped (opened)
    with opened(pkg, out, calibration) as pkg:  # once: a plain .onnx file is wrapped here, not again below
        base = pkg.variants["fp32"].get("recipe") or {}
        half = base.get("weights") == "float16"  # marked at export (a half module) or when a float16 .onnx was wrapped (review)
        as_given = half and not base.get("exporter")
        if precision != "fp16" and (half or (any(t["dtype"] == "float16" for t in pkg.manifest["inputs"] + pkg.manifest["outputs"])
                                                 and _weights_in_float16(pkg.variant_path("fp32")))):  # float16 in and out, float32 inside, quantizes
            # ONNX Runtime's quantizers take float32 graphs: its own error named a temporary file
            raise InputError(f"{pkg.name} computes in float16 ({'a float16 .onnx, as given' if as_given else 'a half-precision module'}), "
                             f"and {precision.upper()} is made from a float32 graph: " + ("quantize the float32 .onnx it was made from."
                             if as_given else "export the module after model.float() to quantize it."))
        if precision == "fp16":
            return to_fp16(pkg, made_from=made_from or "fp32", out=out, measure_latency=measure_latency, progress=progress,
                           held_out=held_out, replace=replace, budget=budget)
        new_budget = budget_entry(pkg, budget) if budget is not None else None  # recorded with the variant, not before
        if precision == "int4":
            ctx = Context(progress=progress, held_out=held_out, tuning=tuning, replace=replace, budget=new_budget)
            return run_step(_step("int4", "cpu", "auto", input_kind(pkg)), pkg, ctx, measure_latency)
        kind = input_kind(pkg)
        if preset == "tensorrt":
            method = "static"
        if method == "auto":
            method = "static" if (calibration is not None or kind == "image") else "dynamic"
        if kind == "generation" and method != "dynamic":
            # calibrating activations needs feeds of the decoder's every step, KV cache included
            raise InputError("A text-generation package's int8 is dynamic (the default); static and tensorrt INT8 of a decoder "
                             "with its KV cache is not supported (--precision int4 makes a smaller one).")
        if method == "dynamic" and calibration is not None and kind != "tensor":
            # a tensor model's arrays are its held-out inputs even then (edgeai.data.feeds.held_out_inputs)
            raise InputError("--calibration is for static INT8: dynamic INT8 quantizes activations as they come, "
                             f"so the folder would go unread; drop it, or use --method static{' or qat' if kind == 'image' else ''}.")
        ctx = Context(progress=progress, held_out=held_out, tuning=tuning, calibration=calibration, per_channel=per_channel,
                      replace=replace, budget=new_budget)
        if qat_steps is not None:
            ctx.qat_steps = qat_steps
        if calibrate is not None:
            if method not in ("static", "qat"):  # auto chose dynamic: no activations to calibrate
                raise InputError(f"--calibrate applies to static INT8, and {pkg.name} quantizes dynamically by default; "
                                 "add --method static (with --calibration for a model without built-in inputs).")
            ctx.calibrate = calibrate
        return run_step(_step(precision, preset, method, kind), pkg, ctx, measure_latency)


def to_fp16(pkg: str | os.PathLike | Package, made_from: str = "fp32", out: str | os.PathLike | None = None,
            measure_latency: bool = True, progress: Progress | None = None, held_out: list[str] | None = None,
            replace: bool = False, budget: float | None = None) -> Package:
    """Add the ``fp16`` variant: the graph converted to float16, its inputs and outputs kept
    float32 (see steps/fp16.py). ``made_from``: ``fp32`` (what TensorRT compiles whole) or
    ``optimized`` (ONNX Runtime's fused ops, for CUDA). ``budget``: as :func:`quantize`'s, the
    threshold the variant is judged by, recorded with it."""
    with opened(pkg, out) as pkg:
        if made_from not in FP16_SOURCES:
            raise InputError(f"fp16 is made from {' or '.join(FP16_SOURCES)}; got {made_from!r}.")
        ctx = Context(progress=progress, held_out=held_out, made_from=made_from, replace=replace,
                      budget=budget_entry(pkg, budget) if budget is not None else None)
        return run_step(_step("fp16", "cpu", "auto", input_kind(pkg)), pkg, ctx, measure_latency)


def budget_entry(pkg: Package, minimum: float) -> dict:
    """The package's budget with ``minimum`` as the threshold of its metric (``--budget``); the
    runner writes it with the new variant, so a refused command changes nothing."""
    from edgeai import families
    from edgeai.data.compare import with_budget

    budget = pkg.manifest.get("budget")
    if budget is None:  # a wrapped .onnx file: its family's metric
        family = families.families().get(pkg.manifest.get("family", "custom")) or families.get("custom")
        if family.budget is None:
            raise InputError(f"The {family.name} family has no accuracy metric, so --budget has nothing to set.")
        budget = family.budget.as_manifest()
    return with_budget(budget, minimum)


def _check(precision: str, preset: str, method: str) -> None:
    if precision not in PRECISIONS:
        raise InputError(f"Unknown precision {precision!r}; choose {' or '.join(PRECISIONS)}.")
    if preset not in PRESETS:
        raise InputError(f"Unknown preset {preset!r}; choose {' or '.join(PRESETS)}.")
    if method not in METHODS:
        raise InputError(f"Unknown quantization method {method!r}; choose {', '.join(METHODS[1:])} or auto.")


def _step(precision: str, preset: str, method: str, kind: str) -> Step:
    return STEPS.get((precision, preset, method, kind)) or STEPS[(precision, preset, method, "*")]


def _weights_in_float16(path) -> bool:
    """Whether a graph holds more float16 weights than float32 ones: a half-precision module,
    which ONNX Runtime's quantizers cannot take (a float32 module that casts its float16 inputs can)."""
    import numpy as np
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    count = {onnx.TensorProto.FLOAT16: 0, onnx.TensorProto.FLOAT: 0}
    constants = [a.t for node in model.graph.node if node.op_type == "Constant" for a in node.attribute if a.name == "value"]
    for t in [*model.graph.initializer, *constants]:  # weights kept in Constant nodes count too
        if t.data_type in count:
            count[t.data_type] += int(np.prod(t.dims)) if len(t.dims) else 1
    return count[onnx.TensorProto.FLOAT16] > count[onnx.TensorProto.FLOAT]
