"""ONNX -> optimized / INT8 variants of a model package (``edgeai.quantize``).

Uses ONNX Runtime's own tools: offline graph optimization (saved at the portable *extended*
level) and ``onnxruntime.quantization`` (static QDQ with calibration, or dynamic). Each new
variant is compared with fp32 on held-out inputs and timed on this CPU before it is recorded.

    from edgeai.quantize import optimize, quantize
    optimize("pkg/")                          # adds the "optimized" variant
    quantize("pkg/", method="static")         # adds the "int8" variant (tuned for ONNX Runtime's CPU kernels)
    quantize("pkg/", preset="tensorrt")       # the "int8" variant TensorRT accepts: static, symmetric QDQ
    quantize("pkg/", precision="fp16")        # adds the "fp16" variant (for GPUs; inputs/outputs stay fp32)
"""

from __future__ import annotations

import collections
import contextlib
import io
import os
import tempfile
from pathlib import Path
from typing import Callable

import numpy as np
import onnx

from edgeai import __version__
from edgeai.errors import ExportError, InputError, PackageError
from edgeai.package import (
    _TMP_MARK,
    SCHEMA_VERSION,
    Package,
    now,
    remove_stale_files,
    staging_dir,
    variant_entry,
    write_manifest,
)

from edgeai.data import compare as measure

Progress = Callable[[str], None]
__all__ = ["optimize", "quantize", "to_fp16", "wrap_onnx", "record_latencies"]
PRESETS = ("cpu", "tensorrt")


def _say(progress: Progress | None, msg: str) -> None:
    if progress:
        progress(msg)


def _tmp_file(pkg: Package, stem: str) -> Path:
    return pkg.path / f"{stem}{_TMP_MARK}{os.getpid()}.onnx"


def op_histogram(model: onnx.ModelProto | str | os.PathLike) -> dict[str, int]:
    if not isinstance(model, onnx.ModelProto):
        model = onnx.load(str(model), load_external_data=False)
    return dict(collections.Counter(n.op_type for n in model.graph.node).most_common())


# -- packages from plain .onnx files ---------------------------------------------------------
from edgeai.data.dtypes import tensor_specs as _tensor_specs  # noqa: E402


def wrap_onnx(path: str | os.PathLike, out: str | os.PathLike | None = None) -> Package:
    """Wrap a plain ``.onnx`` file in a package (task ``tensor``) at ``out`` (default: beside it)."""
    src = Path(path)
    try:
        model = onnx.load(str(src))
        onnx.checker.check_model(model)
    except Exception as e:  # onnx raises DecodeError, ValidationError, OSError...
        raise PackageError(f"{src} is not a valid ONNX model: {str(e).splitlines()[0] if str(e) else type(e).__name__}.") from None
    target = Path(out) if out else src.with_suffix("")
    graph_inputs = {i.name for i in model.graph.initializer}
    with staging_dir(target) as tmp:
        onnx.save(model, str(tmp / "model.onnx"))
        manifest = {
            "schema_version": SCHEMA_VERSION,
            "name": src.stem,
            "family": "custom",
            "task": "tensor",
            "inputs": _tensor_specs([i for i in model.graph.input if i.name not in graph_inputs]),
            "outputs": _tensor_specs(model.graph.output),
            "preprocess": {"type": "none"},
            "postprocess": {"type": "none"},
            "assets": {},
            "variants": {},
            "provenance": {"source": str(src.resolve()), "created": now(), "edgeai": __version__,
                           "opset": max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default=0)},
        }
        manifest["variants"] = {"fp32": variant_entry(tmp, "model.onnx", made_from=None)}
        write_manifest(tmp, manifest)
    return Package.open(target)


def as_package(x: str | os.PathLike | Package, out: str | os.PathLike | None = None) -> Package:
    """The package to add a variant to, with the debris of earlier killed runs removed."""
    if isinstance(x, Package):
        pkg = x
    elif Path(x).suffix == ".onnx" and Path(x).is_file():
        return wrap_onnx(x, out)
    else:
        pkg = Package.open(x)
    remove_stale_files(pkg.path)
    return pkg


# -- sample inputs: the shared layer (edgeai.data.feeds)
from edgeai.data.feeds import calibration_feeds, held_out_feeds, text_feeds  # noqa: E402


def _is_text(pkg: Package) -> bool:
    return pkg.manifest.get("preprocess", {}).get("type") == "text"


# -- running variants on CPU -----------------------------------------------------------------
def _cpu_runner(pkg: Package, path: Path, simulate_qdq: bool = False):
    from edgeai.session import Session

    m = pkg.manifest
    if simulate_qdq:
        # Q/DQ pairs run as written (quantize, dequantize, float op) instead of being fused into
        # ONNX Runtime's int8 CPU kernels: the arithmetic of an engine that accumulates in int32,
        # like TensorRT's. Measured on EfficientNet-Lite0's symmetric QDQ: 0.978 top-1 agreement
        # simulated vs 0.548 through the fused s8s8 AVX2 kernels, which saturate int16.
        import onnxruntime as ort

        from edgeai.session import session_options

        so = session_options()
        so.add_session_config_entry("session.disable_quant_qdq", "1")
        session = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
        names = [o["name"] for o in m["outputs"]]
        return lambda feed: dict(zip(names, session.run(names, feed)))
    return Session(path, m["inputs"], m["outputs"], provider="cpu").run


def _agreement(pkg: Package, reference: Path, candidate: Path, feeds, simulate_qdq: bool = False) -> dict[str, dict]:
    """``accuracy`` (the worst figures) and ``accuracy_details`` (per output) of a new variant."""
    ref = measure.run_batches(_cpu_runner(pkg, reference), feeds)
    out = measure.run_batches(_cpu_runner(pkg, candidate, simulate_qdq), feeds)
    figures = measure.compare(ref, out, pkg.task)
    figures["samples"] = float(next(iter(ref.values())).shape[0])
    return {"accuracy": figures, "accuracy_details": {"vs": "fp32", "outputs": measure.per_output(ref, out)}}


# -- optimize --------------------------------------------------------------------------------
def optimize(pkg: str | os.PathLike | Package, out: str | os.PathLike | None = None, progress: Progress | None = None,
             held_out: list[str] | None = None) -> Package:
    """Add the ``optimized`` variant: ONNX Runtime's offline graph optimization, extended level.

    The extended level (constant folding, Conv+BN/activation fusions, transformer fusions) is
    portable across CPUs; the layout transforms of the *all* level are hardware specific and are
    applied at load time instead (see DESIGN.md, variant choice).
    """
    import onnxruntime as ort

    pkg = as_package(pkg, out)
    if pkg.manifest["family"] == "transformer":
        return _optimize_transformer(pkg, progress, held_out)
    src = pkg.variant_path("fp32")
    tmp = _tmp_file(pkg, "model.optimized")
    _say(progress, "optimizing the graph (ONNX Runtime, extended level)")
    so = ort.SessionOptions()
    so.log_severity_level = 3
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    so.optimized_model_filepath = str(tmp)
    try:
        ort.InferenceSession(str(src), so, providers=["CPUExecutionProvider"])
        _add_optimized(pkg, src, tmp, {"tool": f"onnxruntime {ort.__version__}", "level": "extended"}, progress, held_out)
    finally:
        tmp.unlink(missing_ok=True)
    return pkg


def _add_optimized(pkg: Package, src: Path, tmp: Path, recipe: dict, progress: Progress | None,
                   held_out: list[str] | None) -> None:
    """Check an optimized graph against fp32 on held-out inputs, then record it."""
    _say(progress, "checking the optimized graph against fp32 on held-out inputs")
    agreement = _agreement(pkg, src, tmp, held_out_feeds(pkg, texts=held_out))
    before, after = op_histogram(src), op_histogram(tmp)
    recipe = {**recipe, "nodes_before": sum(before.values()), "nodes_after": sum(after.values())}
    recipe.setdefault("fusions", sorted(k for k in after if k not in before))
    pkg.add_variant("optimized", tmp, {"made_from": "fp32", "recipe": recipe, **agreement})


def _optimize_transformer(pkg: Package, progress: Progress | None, held_out: list[str] | None) -> Package:
    """ONNX Runtime's transformer optimizer (model type bert): one Attention per layer,
    SkipLayerNormalization, EmbedLayerNormalization and BiasGelu. Its fused ops are ONNX Runtime
    contrib ops that both the CPU and CUDA providers run; no hardware-specific layout is saved.
    """
    import logging

    import onnxruntime as ort
    from onnxruntime.transformers.fusion_options import FusionOptions
    from onnxruntime.transformers.optimizer import optimize_model

    src = pkg.variant_path("fp32")
    tmp = _tmp_file(pkg, "model.optimized")
    _say(progress, "fusing Attention, LayerNorm and GELU (ONNX Runtime transformer optimizer, model type bert)")
    logger = logging.getLogger("onnxruntime.transformers")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            # The fuser cannot always read num_heads/hidden_size off the graph; the exporter records them.
            arch = pkg.manifest["provenance"].get("architecture", {})
            model = optimize_model(str(src), model_type="bert", num_heads=int(arch.get("num_heads", 0)),
                                   hidden_size=int(arch.get("hidden_size", 0)),
                                   optimization_options=FusionOptions("bert"), opt_level=0, use_gpu=False)
        fusions = {k: int(v) for k, v in model.get_fused_operator_statistics().items() if v}
        model.save_model_to_file(str(tmp))
        recipe = {"tool": f"onnxruntime.transformers.optimizer {ort.__version__}", "model_type": "bert", "fusions": fusions}
        _add_optimized(pkg, src, tmp, recipe, progress, held_out)
    finally:
        logger.setLevel(level)
        tmp.unlink(missing_ok=True)
    return pkg


# -- quantize --------------------------------------------------------------------------------
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
) -> Package:
    """Add the ``int8`` variant and record its accuracy against fp32 and its CPU latency.

    ``precision="fp16"`` adds the ``fp16`` variant instead (see :func:`to_fp16`; ``made_from``
    picks its source). ``preset="tensorrt"`` makes the int8 variant TensorRT accepts: static
    QDQ with symmetric int8 weights *and* activations (ONNX Runtime's CPU default, uint8
    activations with a zero point, is refused by TensorRT).

    For text models ``tuning``/``held_out`` replace the built-in sentence sets (texts.py):
    the search for layers to keep in float looks only at ``tuning``, the recorded accuracy
    only at ``held_out``.

    ``method``: ``static`` (QDQ, per-channel int8 weights, uint8 activations calibrated on real
    inputs), ``dynamic`` (int8 weights, activations quantized at run time), or ``auto``: static
    when calibration inputs exist for the package (images), dynamic otherwise.
    """
    if precision not in ("int8", "fp16"):
        raise InputError(f"Unknown precision {precision!r}; choose int8 or fp16.")
    if preset not in PRESETS:
        raise InputError(f"Unknown preset {preset!r}; choose {' or '.join(PRESETS)}.")
    if method not in ("auto", "static", "dynamic"):
        raise InputError(f"Unknown quantization method {method!r}; choose static, dynamic or auto.")
    if precision == "fp16":
        if method != "auto" or calibration is not None or preset != "cpu":
            raise InputError("fp16 is a conversion of the graph: --method, --calibration and --preset apply to int8 only.")
        return to_fp16(pkg, made_from=made_from or "fp32", out=out, measure_latency=measure_latency, progress=progress,
                       held_out=held_out)
    if made_from is not None:
        raise InputError("made_from applies to fp16; int8 is made from the graph its method needs.")
    pkg = as_package(pkg, out)
    is_image = pkg.manifest.get("preprocess", {}).get("type") == "image"
    if preset == "tensorrt":
        if method == "dynamic":
            raise InputError("TensorRT runs only static INT8 (calibrated QDQ); use --method static or auto with --preset tensorrt.")
        method = "static"
    if method == "auto":
        method = "static" if (calibration is not None or is_image) else "dynamic"
    src = pkg.variant_path("fp32")
    made_from = "fp32"
    tmp = _tmp_file(pkg, "model.int8")
    try:
        with tempfile.TemporaryDirectory(prefix="edgeai-quant-") as work:
            if method == "dynamic" and _is_text(pkg):
                # Quantize the fused graph when there is one (QAttention); keep the layers whose
                # quantization costs most in float until the budget holds on the tuning sentences.
                made_from = "optimized" if "optimized" in pkg.variants else "fp32"
                recipe = _dynamic_within_budget(pkg, pkg.variant_path(made_from), src, Path(work), tmp, per_channel, progress,
                                                tuning)
            elif preset == "tensorrt":
                feeds = calibration_feeds(pkg, calibration)
                _say(progress, f"calibrating static INT8 for TensorRT (symmetric QDQ, per-channel) on {len(feeds)} inputs")
                recipe = _static_tensorrt(src, Path(work), tmp, feeds, per_channel)
            elif method == "static":
                feeds = calibration_feeds(pkg, calibration)
                _say(progress, f"calibrating static INT8 (QDQ, per-channel) on {len(feeds)} inputs")
                recipe = _static(src, Path(work), tmp, feeds, per_channel)
            else:
                _say(progress, "quantizing weights to INT8 (dynamic)")
                recipe = _dynamic(src, Path(work), tmp, per_channel)
        _say(progress, "measuring INT8 agreement with fp32 on held-out inputs")
        agreement = _agreement(pkg, src, tmp, held_out_feeds(pkg, texts=held_out), simulate_qdq=preset == "tensorrt")
        pkg.add_variant("int8", tmp, {"made_from": made_from, "recipe": recipe, **agreement})
    finally:
        tmp.unlink(missing_ok=True)
    if measure_latency:
        record_latencies(pkg, progress=progress)
    return pkg


def _preprocessed(src: Path, work: Path) -> Path:
    """ONNX Runtime's quantization pre-processing (shape inference; also folds static Pads into Conv)."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    pre = work / "pre.onnx"
    quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)
    return pre


def _calibrated_qdq(pre: Path, out: Path, feeds, per_channel: bool, activations: str, **options) -> None:
    """``quantize_static`` to QDQ with int8 weights and MinMax calibration on ``feeds``."""
    from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._it = iter(feeds)

        def get_next(self):
            return next(self._it, None)

    with contextlib.redirect_stdout(io.StringIO()):  # the calibrators print progress to stdout
        quantize_static(
            str(pre), str(out), Reader(),
            quant_format=QuantFormat.QDQ,
            per_channel=per_channel,
            activation_type=QuantType.QUInt8 if activations == "uint8" else QuantType.QInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=CalibrationMethod.MinMax,
            **options,
        )


def _static(src: Path, work: Path, dest: Path, feeds, per_channel: bool) -> dict:
    """Static QDQ: MinMax calibration, per-channel int8 weights, uint8 activations.

    Measured on EfficientNet-Lite0 (benchmarks/results/cnn.md): MinMax beat Percentile and Entropy
    (the outliers of the linear projection convs matter) and calibrates 6x faster; keeping the
    first conv in float lowers the error further at no measurable cost; layers whose products
    overflow int16 on AVX2 get 7-bit weights (see saturation.py).
    """
    from .saturation import saturated_layers

    pre = _preprocessed(src, work)
    convs = [n for n in onnx.load(str(pre), load_external_data=False).graph.node if n.op_type in ("Conv", "Gemm")]
    exclude = [convs[0].name] if convs and convs[0].op_type == "Conv" else []

    def run(out: Path, overrides: dict) -> None:
        _calibrated_qdq(pre, out, feeds, per_channel, "uint8", nodes_to_exclude=exclude,
                        extra_options={"TensorQuantOverrides": overrides} if overrides else {})

    first = work / "first.onnx"
    run(first, {})
    hit = saturated_layers(pre, first, feeds[:: max(1, len(feeds) // 8)][:8])
    if hit:
        weight_of = {n.name: n.input[1] for n in convs}
        # "axis": 0 keeps the override per-channel; without it ORT silently goes per-tensor.
        run(dest, {weight_of[name]: [{"axis": 0, "reduce_range": True}] for name in hit})
    else:
        os.replace(first, dest)
    return {
        "method": "static", "format": "QDQ", "per_channel": per_channel, "activations": "uint8", "weights": "int8",
        "calibration": {"method": "minmax", "samples": len(feeds)},
        "float_nodes": exclude,
        "reduce_range_nodes": hit,
    }


def _static_tensorrt(src: Path, work: Path, dest: Path, feeds, per_channel: bool) -> dict:
    """The QDQ graph TensorRT builds an INT8 engine from: int8 weights and activations with zero
    points of 0 (TensorRT supports symmetric quantization only), biases left in float (a
    TensorRT DequantizeLayer takes int8/fp8/int4, not the int32 ONNX Runtime quantizes biases
    to), and Q/DQ around every quantized op so TensorRT, not ONNX Runtime, decides what to fuse.
    Nothing is excluded and nothing gets 7-bit weights: those fixes are for ONNX Runtime's AVX2
    CPU kernels (_static)."""
    _calibrated_qdq(_preprocessed(src, work), dest, feeds, per_channel, "int8",
                    extra_options={"ActivationSymmetric": True, "WeightSymmetric": True, "QuantizeBias": False})
    return {
        "method": "static", "preset": "tensorrt", "format": "QDQ", "per_channel": per_channel, "symmetric": True,
        "bias": "float",
        "activations": "int8", "weights": "int8", "calibration": {"method": "minmax", "samples": len(feeds)},
        "accuracy_measured_on": "cpu, Q/DQ simulated in float (int32-accumulating arithmetic, as TensorRT's)",
    }


def to_fp16(pkg: str | os.PathLike | Package, made_from: str = "fp32", out: str | os.PathLike | None = None,
            measure_latency: bool = True, progress: Progress | None = None, held_out: list[str] | None = None) -> Package:
    """Add the ``fp16`` variant: the graph's weights and arithmetic converted to float16, its
    inputs and outputs kept float32 (callers feed and read what they always did).

    Precision lives in the graph: CUDA runs fp16 kernels from it, and TensorRT builds an fp16
    engine (edgeai turns on its fp16 builder flag for this variant, see
    ``providers.tensorrt_flags``, which ONNX Runtime's weakly typed networks need). The converter is ONNX Runtime's own
    (``onnxruntime.transformers.float16``), which keeps ops that misbehave in float16 (its
    default block list) in float32 and clamps weights to the float16 range. Made from ``fp32``
    by default: the portable graph that TensorRT compiles whole; ``made_from="optimized"`` keeps
    ONNX Runtime's fused transformer ops for the CUDA provider. Accuracy against fp32 is
    measured on the held-out inputs on this machine's CPU (ONNX Runtime runs float16 there too);
    GPU kernels accumulate differently, so ``bench``/``report`` on the GPU are the final word.
    """
    import warnings

    import onnxruntime as ort
    from onnxruntime.transformers.float16 import DEFAULT_OP_BLOCK_LIST, convert_float_to_float16

    pkg = as_package(pkg, out)
    if made_from not in ("fp32", "optimized"):
        raise InputError(f"fp16 is made from fp32 or optimized; got {made_from!r}.")
    src = pkg.variant_path(made_from)
    tmp = _tmp_file(pkg, "model.fp16")
    try:
        _say(progress, f"converting {made_from} to float16 (inputs and outputs stay float32)")
        model = onnx.load(str(src))
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            converted = convert_float_to_float16(model, keep_io_types=True)
        clamped = sum("truncated" in str(w.message) or "out of" in str(w.message) for w in caught)
        onnx.save(converted, str(tmp))
        blocked = sorted({n.op_type for n in converted.graph.node} & set(DEFAULT_OP_BLOCK_LIST))
        recipe = {"tool": f"onnxruntime.transformers.float16 {ort.__version__}", "keep_io_types": True,
                  "float32_ops": blocked, "clamp_warnings": clamped, "accuracy_measured_on": "cpu"}
        _say(progress, "measuring fp16 agreement with fp32 on held-out inputs")
        agreement = _agreement(pkg, pkg.variant_path("fp32"), tmp, held_out_feeds(pkg, texts=held_out))
        pkg.add_variant("fp16", tmp, {"made_from": made_from, "recipe": recipe, **agreement})
    finally:
        tmp.unlink(missing_ok=True)
    if measure_latency:
        record_latencies(pkg, progress=progress)
    return pkg


def _dynamic(src: Path, work: Path, dest: Path, per_channel: bool, exclude: list[str] | None = None) -> dict:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    import logging

    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # the quantizer logs a generic "consider pre-processing" on the root logger
    try:
        # DefaultTensorType: the fused contrib ops have no type inference in the quantizer (FACTS.md).
        quantize_dynamic(str(src), str(dest), per_channel=per_channel, weight_type=QuantType.QInt8,
                         nodes_to_exclude=list(exclude or []), extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})
    finally:
        root.setLevel(level)
    return {"method": "dynamic", "per_channel": per_channel, "weights": "int8", "activations": "uint8 (per call)",
            "float_nodes": list(exclude or [])}


def _dynamic_within_budget(pkg: Package, src: Path, reference: Path, work: Path, dest: Path, per_channel: bool,
                           progress: Progress | None, tuning_texts: list[str] | None = None) -> dict:
    """Dynamic INT8; if the budget is missed on the tuning sentences, keep the most sensitive
    layers in float, a few more each round, until it holds.

    Sensitivity (see sensitivity.py) is measured by simulating the quantization of one layer at a
    time, which takes seconds per layer instead of a full quantizer run; every candidate model is
    then made by the real quantizer and measured. Held-out sentences are never looked at here.
    """
    from .sensitivity import rank_layers
    from edgeai.data.texts import TUNING

    budget = pkg.manifest.get("budget", {"metric": "cosine_min", "min": 0.98})
    tuning = text_feeds(pkg, tuning_texts or TUNING)
    ref = measure.run_batches(_cpu_runner(pkg, reference), tuning)

    def meets(path: Path) -> tuple[bool, dict]:
        figs = measure.compare(ref, measure.run_batches(_cpu_runner(pkg, path), tuning), pkg.task)
        ok = figs.get(budget["metric"], -1.0) >= budget["min"] and (pkg.task != "text-embedding" or figs["cosine_mean"] >= 0.99)
        return ok, figs

    _say(progress, "quantizing weights to INT8 (dynamic, per-channel)")
    recipe = _dynamic(src, work, dest, per_channel)
    ok, figs = meets(dest)
    if ok:
        return {**recipe, "tuning": figs}
    _say(progress, f"ranking layers by sensitivity (all-INT8 {budget['metric']} on the tuning texts is "
         f"{figs.get(budget['metric'], 0):.4f}, budget {budget['min']})")
    ranked = rank_layers(src, tuning, ref, pkg.task)
    # 2, 4, 6, ... and, if still missed, every candidate: a short ranking is tried to its end.
    for k in sorted({min(k, len(ranked)) for k in (2, 4, 6, 8, 10, 12, 16, 24, 32)} - {0}):
        _say(progress, f"quantizing with the {k} most sensitive of {len(ranked)} layers kept in float")
        recipe = _dynamic(src, work, dest, per_channel, ranked[:k])
        ok, figs = meets(dest)
        if ok:
            break
    return {**recipe, "tuning": figs, "budget_met_on_tuning": ok}


def record_latencies(pkg: Package, batch: int = 1, threads: int | None = None, progress: Progress | None = None) -> None:
    """Time every variant on this CPU (a fresh process each, alternating rounds) and record it."""
    from edgeai.benchmark import bench

    def step(done: int, total: int, label: str) -> None:
        _say(progress, f"timing every variant on this CPU, a fresh process each ({done}/{total})")

    bench(pkg, providers="cpu", batches=(batch,), threads=threads, min_time=0.5, record=True, on_step=step, source="quantize")
