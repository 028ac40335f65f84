"""``torch.onnx.export`` with edgeai's defaults and its errors turned into one sentence."""

from __future__ import annotations

import io
import warnings
from contextlib import redirect_stdout
from pathlib import Path

from edgeai.errors import ExportError


def to_onnx(module, args: tuple, path: Path, input_names: list[str], output_names: list[str],
            dynamic_axes: dict, opset: int) -> None:
    """Export with the TorchScript exporter.

    FACTS.md: both exporters match PyTorch on these models, but the dynamo exporter can
    specialise a dynamic batch axis to the example's size and leaves LSTM weights as run-time
    computations; the TorchScript exporter folds constants and keeps named dynamic axes.
    """
    import torch

    try:
        with warnings.catch_warnings(), redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            torch.onnx.export(
                module, args, str(path), input_names=input_names, output_names=output_names,
                dynamic_axes=dynamic_axes, opset_version=opset, do_constant_folding=True, dynamo=False,
            )
    except Exception as e:  # torch raises many types (OnnxExporterError, RuntimeError, TypeError...)
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ExportError(f"torch.onnx.export failed: {first[:300]}") from None
