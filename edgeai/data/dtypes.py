"""Tensor element types: the one table every layer reads (manifest name <-> numpy <-> ONNX)."""

from __future__ import annotations

import numpy as np

from edgeai.errors import ExportError

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
ORT_TO_NUMPY = {f"tensor({'float' if k == 'float32' else k})": v[0] for k, v in DTYPES.items()}


def numpy_dtype(name: str) -> np.dtype:
    return DTYPES[name][0]


def tensor_specs(values) -> list[dict]:
    """ONNX graph inputs/outputs (``ValueInfoProto``) -> manifest tensor specs, named axes kept."""
    specs = []
    for v in values:
        t = v.type.tensor_type
        if t.elem_type not in ONNX_TO_NAME:
            raise ExportError(f"Tensor {v.name!r} has ONNX element type {t.elem_type}, which edgeai does not support.")
        shape = [d.dim_value if d.HasField("dim_value") else (d.dim_param or f"dim{i}") for i, d in enumerate(t.shape.dim)]
        specs.append({"name": v.name, "dtype": ONNX_TO_NAME[t.elem_type], "shape": shape})
    return specs


def graph_specs(model) -> tuple[list[dict], list[dict]]:
    """(inputs, outputs) specs of an ONNX model; initializers listed as inputs are not inputs."""
    inits = {i.name for i in model.graph.initializer}
    return tensor_specs([i for i in model.graph.input if i.name not in inits]), tensor_specs(model.graph.output)
