"""Tensor element types: the one table every layer reads (manifest name <-> numpy <-> ONNX)."""

from __future__ import annotations

import numpy as np

# manifest dtype name -> (numpy dtype, ONNX TensorProto element type)
DTYPES: dict[str, tuple[np.dtype, int]] = {
    "float32": (np.dtype(np.float32), 1),
    "float16": (np.dtype(np.float16), 10),
    "int64": (np.dtype(np.int64), 7),
    "int32": (np.dtype(np.int32), 6),
    "uint8": (np.dtype(np.uint8), 2),
    "int8": (np.dtype(np.int8), 3),
    "bool": (np.dtype(np.bool_), 9),
}
ONNX_TO_NAME = {onnx_type: name for name, (_, onnx_type) in DTYPES.items()}
# OrtValue.data_type() names: "tensor(float)" for float32, "tensor(<name>)" for the rest.
ORT_TO_NUMPY = {f"tensor({'float' if k == 'float32' else k})": v[0] for k, v in DTYPES.items()}  # session.py's outputs


def numpy_dtype(name: str) -> np.dtype:
    return DTYPES[name][0]
