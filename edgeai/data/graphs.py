"""Facts read off an ONNX graph without running it: tensor specs and operator counts."""

from __future__ import annotations

import collections
import os

from edgeai.errors import ExportError, PackageError

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


def index_tables(model) -> dict[str, int]:
    """Integer graph inputs that index a table (``Gather`` of a 2-D float initializer: an
    embedding), and the table's rows. PyTorch's Embedding refuses an id outside 0..rows-1;
    ONNX Runtime's Gather reads a negative one from the end of the table, a silent wrong answer,
    so the manifest records the rows (``index_rows``) and the runtime checks them.

    The ids may reach the Gather through ops that move them without changing a value: GPT-2's
    exports reshape ``input_ids`` first (review: its negative ids ran, where BERT's were refused)."""
    import onnx

    model = load_graph(model)
    floats = (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.BFLOAT16)
    T = onnx.TensorProto
    int_types = (T.INT64, T.INT32, T.INT16, T.INT8, T.UINT64, T.UINT32, T.UINT16, T.UINT8)
    tables = {i.name: int(i.dims[0]) for i in model.graph.initializer if len(i.dims) == 2 and i.data_type in floats}
    # every integer input: uint8 ids cast to int64 index a table too (seeded bytes span 0..255)
    origin = {i.name: i.name for i in model.graph.input if i.type.tensor_type.elem_type in int_types}
    rows: dict[str, int] = {}
    for n in model.graph.node:  # in topological order, as ONNX requires
        attrs = {a.name: a for a in n.attribute}
        if n.op_type in _VALUE_PRESERVING and n.input and n.input[0] in origin and len(n.output) == 1:
            if n.op_type != "Cast" or attrs["to"].i in int_types:
                origin[n.output[0]] = origin[n.input[0]]
        axis = attrs["axis"].i if "axis" in attrs else 0
        if n.op_type == "Gather" and axis == 0 and len(n.input) == 2 and n.input[1] in origin and n.input[0] in tables:
            name = origin[n.input[1]]
            rows[name] = min(rows.get(name, tables[n.input[0]]), tables[n.input[0]])
    return rows


# Ops whose output holds their first input's values, only moved or re-typed: ids that pass
# through them still index the table they reach.
_VALUE_PRESERVING = {"Reshape", "Unsqueeze", "Squeeze", "Flatten", "Identity", "Cast", "Transpose"}


def mark_index_rows(inputs: list[dict], model) -> list[dict]:
    """``inputs`` (manifest specs) with ``index_rows`` on those that index a table of ``model``."""
    tables = index_tables(model)
    for spec in inputs:
        if spec["name"] in tables:  # ids into an embedding: the runtime refuses ids outside it (session._Spec)
            spec["index_rows"] = tables[spec["name"]]
    return inputs


def valid_onnx(path: str | os.PathLike):
    """The ONNX model at ``path``, loaded and checked, or one PackageError sentence for a file that
    is not one (cut short, empty, a download's error page): what wrapping a .onnx file and the
    refusal to read one as a package both say."""
    import onnx

    try:
        model = onnx.load(str(path))
        onnx.checker.check_model(model)
    except Exception as e:  # noqa: BLE001 -- onnx raises DecodeError, ValidationError, OSError...
        if os.path.isfile(path) and os.path.getsize(path) == 0:  # as an empty image is said (review: "no ir_version")
            raise PackageError(f"{path} is not a valid ONNX model: it is empty (0 bytes).") from None
        raise PackageError(f"{path} is not a valid ONNX model: {str(e).splitlines()[0].rstrip('.') if str(e) else type(e).__name__}.") from None
    return model
