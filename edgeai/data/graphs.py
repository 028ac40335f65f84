"""Facts read off an ONNX graph without running it: tensor specs and operator counts."""

from __future__ import annotations

import collections
import os

from edgeai.errors import ExportError

from .dtypes import ONNX_TO_NAME


def load_graph(model):
    """An ONNX ModelProto, from a path if need be (the graph only: external weights stay on disk)."""
    import onnx

    return model if isinstance(model, onnx.ModelProto) else onnx.load(os.fspath(model), load_external_data=False)


def op_histogram(model) -> dict[str, int]:
    """Operator type -> node count, most frequent first."""
    return dict(collections.Counter(n.op_type for n in load_graph(model).graph.node).most_common())


def tensor_specs(values) -> list[dict]:
    """ONNX graph inputs/outputs (``ValueInfoProto``) -> manifest tensor specs, named axes kept."""
    specs = []
    for v in values:
        t = v.type.tensor_type
        if t.elem_type not in ONNX_TO_NAME:
            import onnx

            kind = onnx.TensorProto.DataType.Name(t.elem_type).lower() if t.elem_type in onnx.TensorProto.DataType.values() else t.elem_type
            raise ExportError(f"Tensor {v.name!r} is of type {kind}, which edgeai does not run; it takes "
                              f"{', '.join(sorted(set(ONNX_TO_NAME.values())))} (float64: convert the model with .float()).")
        # An unnamed dynamic axis is its tensor's own: axes with one name must agree (session.check_feed).
        shape = [d.dim_value if d.HasField("dim_value") else (d.dim_param or f"{v.name}_dim{i}") for i, d in enumerate(t.shape.dim)]
        specs.append({"name": v.name, "dtype": ONNX_TO_NAME[t.elem_type], "shape": shape})
    return specs


def graph_specs(model) -> tuple[list[dict], list[dict]]:
    """(inputs, outputs) specs of an ONNX model; initializers listed as inputs are not inputs."""
    model = load_graph(model)
    inits = {i.name for i in model.graph.initializer}
    return tensor_specs([i for i in model.graph.input if i.name not in inits]), tensor_specs(model.graph.output)
