"""ONNX Runtime tooling the steps share: quieting its tools, quantization pre-processing and
calibrated QDQ."""

from __future__ import annotations

import contextlib
import io
import logging
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def quiet(logger: str | None = None) -> Iterator[None]:
    """Keep a tool's chatter out of the user's terminal: ``logger`` (default: the root logger) at
    ERROR, stdout swallowed."""
    log = logging.getLogger(logger)
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        log.setLevel(level)


def preprocessed(src: Path, work: Path) -> Path:
    """ONNX Runtime's quantization pre-processing (shape inference; also folds static Pads into Conv)."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    pre = work / "pre.onnx"
    quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)
    _name_nodes(pre)
    return pre


def _name_nodes(path: Path) -> None:
    """Give every unnamed node a unique name. ONNX Runtime's quantizer picks nodes by name: an
    excluded "" left out every unnamed node (a whole hand-built graph stayed float, recorded as
    static INT8), and per-node overrides keyed by "" went to the wrong layer (review)."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    nodes = list(model.graph.node)
    if all(n.name for n in nodes):
        return
    taken = {n.name for n in nodes}
    for i, n in enumerate(nodes):
        if not n.name:
            name = f"{n.op_type}_{i}"
            while name in taken:
                name += "_"
            n.name = name
            taken.add(name)
    onnx.save(model, str(path))  # external data stays beside it, named as before


def calibrated_qdq(pre: Path, out: Path, feeds, per_channel: bool, activations: str, method: str = "minmax",
                   **options) -> None:
    """``quantize_static`` to QDQ with int8 weights, activations calibrated on ``feeds`` by
    ``method``: minmax (the default: the full range seen) or percentile (the range of 99.999% of
    the values, ONNX Runtime's default; outliers clipped)."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    from edgeai.errors import InputError

    shapes = {tuple((k, v.shape) for k, v in sorted(f.items())) for f in feeds}
    if method != "minmax" and len(shapes) > 1:  # its histograms stack every output seen: ValueError otherwise
        raise InputError(f"ONNX Runtime's {method} calibrator needs calibration inputs of one shape, and these come in "
                         f"{len(shapes)} (texts of different lengths, or images of different sizes): use --calibrate "
                         "minmax, which takes any, or --calibration DIR of inputs of one shape.")

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._it = iter(feeds)

        def get_next(self):
            return next(self._it, None)

    # The calibrators print progress to stdout, and the quantizer logs a root-logger warning for
    # every per-channel weight of rank 1 (LayerNorm scales in ViT-style models, left per-tensor).
    with quiet():
        quantize_static(
            str(pre), str(out), Reader(),
            quant_format=QuantFormat.QDQ,
            per_channel=per_channel,
            activation_type=QuantType.QUInt8 if activations == "uint8" else QuantType.QInt8,
            weight_type=QuantType.QInt8,
            calibrate_method={"minmax": CalibrationMethod.MinMax, "percentile": CalibrationMethod.Percentile}[method],
            **options,
        )

