"""``custom``: any ``torch.nn.Module`` (``edgeai export FILE.py:FACTORY``, ``export_module``) or a plain .onnx file.

    from edgeai.export import export_module
    export_module(model, {"x": torch.randn(1, 3, 32, 32)}, "mymodel/", dynamic={"x": {0: "batch"}})

The package's task is ``tensor``: arrays in, arrays out, no pre- or post-processing.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from edgeai.data.compare import closeness_floor
from edgeai.data.feeds import feed_files
from edgeai.errors import ExportError, InputError
from edgeai.families import Budget, Family, Option

from ._examples import dynamic_axes, tensors

FAMILY = Family(
    "custom", "tensor", hooks=__name__, rank=3,
    description="Your own nn.Module (FILE.py:FACTORY) or .onnx file: arrays in, arrays out",
    # Cosine sees direction only: int8 outputs 5% too large score 1. closeness (1 - the relative
    # RMS difference of each output, its worst output) adds the scale, at 0.955: the relative
    # difference a cosine of 0.999 already allows in direction (sqrt(2 * 0.001) = 0.045).
    budget=Budget("cosine_min", 0.999, "outputs against fp32's on seeded random inputs (or the --calibration arrays): "
                  "lowest cosine similarity of any sample's output (direction), and closeness, 1 - the relative RMS "
                  "difference of the worst output (scale)",
                  also={"closeness": closeness_floor(0.999)}),
    tolerance=1e-4,  # |onnx - torch| <= tolerance * (1 + |torch|), element-wise, on every validation feed
    options=(
        Option("input", "example input NAME:SHAPE:DTYPE[:LOW..HIGH], e.g. x:1,3,32,32:float32 or ids:1,12:int64:0..99 "
               "(integers default to 0..9; repeat for several).", multiple=True),
        Option("dynamic", "NAME:AXIS:LABEL of an axis that may change size, e.g. x:0:batch.", multiple=True),
        Option("calibration", "with --precision int8: directory of .npy/.npz feeds for static INT8 (dynamic INT8 without it).",
               kind=Path),
        # name_: the flag is --name; the CLI's own NAME argument already takes the keyword name.
        Option("name_", "the package's name in its manifest [default: the -o folder's name, else the file's stem]; also the default -o DIR."),
    ),
)


def build(out=None, precision: str = "fp32", progress=None, factory: str | None = None, input=(), dynamic=(),
          calibration=None, name_: str | None = None):
    """``edgeai export FILE.py:FACTORY --input NAME:SHAPE:DTYPE ... --dynamic NAME:AXIS:LABEL``:
    the module ``factory`` (``FILE.py:FUNCTION``) returns, traced on seeded example inputs."""
    from edgeai.export import generic
    from edgeai.export.exporter import say

    if not factory:
        raise InputError("The custom family exports what a factory returns: name it as FILE.py:FACTORY.")
    if not input:
        raise InputError("Exporting FILE.py:FACTORY needs the example inputs: --input NAME:SHAPE:DTYPE (e.g. x:1,3,32,32:float32).")
    if calibration is not None and precision != "int8":
        raise InputError("--calibration is what int8 calibrates on: add --precision int8 (or run edgeai quantize later).")
    specs = [generic.InputSpec.parse(t) for t in input]
    names = [s.name for s in specs]
    if len(set(names)) != len(names):
        raise InputError(f"Input names repeat: {names}.")
    if calibration is not None:  # before the minutes of tracing (review)
        feed_files(calibration, names)
    axes = generic.parse_dynamic(list(dynamic or []), names)
    name = _check_name(name_) if name_ is not None else _default_name(out, factory)
    _check_same_model(out or Path(name), factory, name if name_ is None else None)  # before the module is built
    say(progress, f"building the module from {factory}")
    module = generic.load_factory(factory)
    try:
        pkg = export_module(module, generic.example_tensors(specs), out or Path(name), axes, precision=precision,
                            calibration=calibration, name=name, source=factory, progress=progress)
    except ExportError as e:
        ints = [s for s in specs if s.dtype.startswith("int")]
        if "fails on the example inputs" not in str(e) or "index" not in str(e).lower() or not ints:
            raise  # not an integer input indexing past a table (a dtype a layer refuses is said as it is)
        # the likely cause: ids past an embedding's rows; each integer input's range, as drawn, named
        ranges = ", ".join(f"{s.name} {'0..9 (the default)' if s.low is None else f'{s.low:g}..{s.high:g}'}" for s in ints)
        s = next((s for s in ints if s.low is None), ints[0])
        import torch

        # the module's own table, where it has one size: the range it takes (review: "0..3" for a 100-row table)
        rows = sorted({m.num_embeddings for m in module.modules() if isinstance(m, torch.nn.Embedding)})
        top, why = (f"0..{rows[0] - 1}", f" (its nn.Embedding has {rows[0]} rows)") if len(rows) == 1 else ("0..N-1", " for a table of N rows")
        raise ExportError(f"{str(e).rstrip('.')}. The integer inputs were drawn from {ranges}: give each the range its "
                          f"table takes, e.g. {s.name}:{','.join(map(str, s.shape))}:{s.dtype}:{top}{why}.") from None
    _say_narrow_ids(pkg, specs)
    return pkg


def _say_narrow_ids(pkg, specs: list) -> None:
    """An integer input left at the default range (0..9) that indexes a larger table: the checks
    against PyTorch, the int8 figures and the timings saw ten of its rows. Said, with the range to give."""
    import warnings

    from edgeai.errors import EdgeAIWarning, user_level

    rows = {i["name"]: i["index_rows"] for i in pkg.manifest["inputs"] if "index_rows" in i}
    for s in specs:
        if s.low is None and rows.get(s.name, 0) > 10:
            warnings.warn(EdgeAIWarning(
                f"{s.name} was drawn from 0..9 (the default), but it indexes a table of {rows[s.name]} rows: the checks "
                f"and figures saw only those ids; give --input {s.name}:{','.join(map(str, s.shape))}:{s.dtype}:0.."
                f"{rows[s.name] - 1} to cover the table."), stacklevel=user_level())


def export_factory(ref: str, inputs: list[str], dynamic: list[str] | None = None, out: str | os.PathLike | None = None,
                   precision: str = "fp32", calibration: str | os.PathLike | None = None, progress=None,
                   name: str | None = None, budget: float | None = None):
    """The CLI's ``edgeai export FILE.py:FACTORY --input NAME:SHAPE:DTYPE ... --dynamic NAME:AXIS:LABEL [--name NAME]``;
    ``budget`` replaces the family's threshold (lowest cosine to fp32)."""
    from edgeai.export.exporter import user_budget

    with user_budget(FAMILY, budget):
        return build(out, precision, progress, factory=ref, input=inputs, dynamic=dynamic, calibration=calibration, name_=name)


def _default_name(out, factory: str) -> str:
    """The -o folder's name, else the factory file's stem, made a valid package name ("my net.py"
    gives "my-net"): a name the user never typed is not refused."""
    raw = Path(out).name if out else Path(factory.rpartition(":")[0]).stem
    name = re.sub(r"[^\w.+-]+", "-", raw).strip("-._+") or "model"
    return _check_name(name[:200])


def _check_same_model(out: str | os.PathLike, source: str, default_name: str | None = None) -> None:
    """Refuse to replace a package made from another factory (or class, or .onnx file): a
    factory export is named after its folder by default, so the name cannot tell two models in
    one folder apart, and ``models.py:lstm`` would silently replace ``models.py:cnn``. The same
    factory (the file compared by name, so a moved checkout still counts) rebuilds its package."""
    from edgeai.atomic import read_manifest
    from edgeai.errors import PackageError

    held = read_manifest(Path(out))
    old = ((held or {}).get("provenance") or {}).get("source")
    if held is None or held.get("family") != "custom" or not isinstance(old, str):
        return  # nothing there, or another family's package: staging_dir's check by name refuses it

    from edgeai.package import factory_key

    if factory_key(old) != factory_key(source):
        raise PackageError(f"{out} holds the package of another model, made from {old}; give {source} its own folder "
                           "(-o DIR, or out= of export_module), or remove that package first.")
    if default_name is not None and held.get("name") not in (None, default_name):  # a copied or renamed folder
        raise PackageError(f"{out} holds {held['name']}, made from this same factory; a factory export is named after "
                           f"its folder ({default_name}), so give --name {held['name']} to rebuild it there.")


def _check_name(name: str) -> str:
    """A package name that is also a usable directory name (it is the default -o DIR)."""
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9][\w.+-]{0,199}", name):
        raise InputError(f"The package name {name!r} should be 1-200 letters, digits, '.', '_', '+' or '-', "
                         "starting with a letter or digit.")
    return name


def export_module(module, example_inputs: dict, out: str | os.PathLike, dynamic: dict[str, dict[int, str]] | None = None,
                  output_names: list[str] | None = None, precision: str = "fp32", calibration: str | os.PathLike | None = None,
                  name: str | None = None, source: str | None = None, progress=None, budget: float | None = None):
    """Export any ``nn.Module`` into a ``tensor``-task package, validated against PyTorch.

    ``example_inputs`` maps input names to example tensors (numpy arrays are taken as tensors); each name is one of ``forward``'s
    parameters, and they are passed in ``forward``'s order whatever their order here (a forward
    of one parameter takes one input of any name). ``dynamic`` names the axes that may change
    size (``{"x": {0: "batch"}}``, or ``{"x": [0]}``, axes named ``x_dim0``...). The export is compared with PyTorch on the example, on it
    mirrored, on new values of its shapes, and on inputs whose dynamic axes are one and two longer, so an example
    batch of 1 cannot silently freeze the batch axis, nor an ``if`` on a tensor its branch
    (where the trace saw one in the module's code, a ``TraceWarning`` names the line).
    Parameters of ``forward`` with a default and no example keep their default. ``precision="int8"``
    adds an int8 variant: static QDQ when ``calibration`` (a directory of .npy/.npz feeds) is
    given, dynamic otherwise; the recipe says which. ``name`` is the manifest's (default: the
    directory's name). ``budget`` replaces the family's threshold (lowest cosine to fp32). The
    module is exported in eval mode, and left in the mode it had. A package of another module (or
    factory) at ``out`` is refused; one of the same is rebuilt.
    """
    from edgeai.export.exporter import check_precision
    from edgeai.export.generic import in_forward_order, no_bfloat16

    check_precision(precision)
    if calibration is not None and precision != "int8":
        raise InputError("calibration inputs are for precision='int8' (static INT8); the fp32 export would not read them.")
    _check_module(module)
    _check_same_model(out, source or type(module).__name__)
    example_inputs = tensors(example_inputs)
    no_bfloat16(module, example_inputs)
    name = _check_name(name) if name is not None else None  # None: the directory's name
    example_inputs = in_forward_order(module, example_inputs)
    dynamic = dynamic_axes(example_inputs, dynamic)
    kind = type(module).__name__
    modes = {m: m.training for m in module.modules()}  # exported in eval mode; the caller's module is left as it was
    try:
        return _export_in_eval_mode(module.eval(), example_inputs, out, dynamic, output_names, precision, calibration,
                                    name, source or kind, progress, budget)
    finally:
        for m, training in modes.items():
            m.training = training


def _export_in_eval_mode(module, example_inputs: dict, out, dynamic: dict, output_names: list[str] | None, precision: str,
                         calibration, name: str | None, source: str, progress, budget: float | None):
    import torch

    from edgeai.export.exporter import Source, Tolerance, export, user_budget
    from edgeai.export.generic import trace_example

    kind = type(module).__name__
    module, keys = _tuple_outputs(_given_only(module, list(example_inputs)), example_inputs)
    shapes = ", ".join(f"{n} {list(t.shape)} {str(t.dtype).replace('torch.', '')}" for n, t in example_inputs.items())
    outputs = _output_names(output_names or keys, _outputs_on_example(module, example_inputs, shapes), list(example_inputs))
    src = Source(
        module=module, name=name or Path(out).name,
        description=f"{kind} exported by edgeai.export.export_module; inputs {shapes}.",
        example=trace_example(example_inputs, dynamic), batches=_validation_feeds(example_inputs, dynamic),
        labels=["on the example", "on the example mirrored", "on new values of the example's shapes"],
        tolerance=Tolerance(_tolerance(module, example_inputs), "max_rel_diff"),
        checked_on="on the example and on new values" + (" and at other sizes of the dynamic axes" if dynamic else ""), dynamic=dynamic,
        output_names=outputs, provenance={"source": source}, dynamo_fallback=True, calibration=calibration, input_examples=example_inputs,
    )
    if any(p.dtype == torch.float16 for p in module.parameters()):  # as a wrapped half .onnx says (quantize/wrap.py)
        src.recipe = {"weights": "float16", "note": "a half-precision module; fp32 names the base variant"}
    if budget is None:  # the caller's (export_factory's --budget), or the family's
        return export(FAMILY, src, out, precision, progress)
    with user_budget(FAMILY, budget):
        return export(FAMILY, src, out, precision, progress)


def _tolerance(module, example: dict) -> float:
    """The family's relative tolerance, or float16's (its 10-bit mantissa rounds at ~1e-3, and
    PyTorch and ONNX Runtime accumulate in different orders) for a half-precision model."""
    import torch

    half = any(t.dtype == torch.float16 for t in example.values()) or any(p.dtype == torch.float16 for p in module.parameters())
    return 1e-2 if half else FAMILY.tolerance


def _given_only(module, names: list[str]):
    """``module`` itself, or, when ``forward`` has parameters with defaults that no example names
    (``forward(x, scale=2.0)``), a wrapper passing the given inputs by name: traced as they are,
    the defaults would become graph inputs nobody feeds (``onnx::Cast_1``), and an input after
    a skipped default would land in its place."""
    import inspect

    import torch

    try:
        params = inspect.signature(module.forward).parameters.values()
    except (TypeError, ValueError):
        return module
    P = inspect.Parameter
    params = list(params)
    extras = [p for p in params if p.name not in names]
    positional = {p.name for p in params if p.kind in (P.POSITIONAL_ONLY, P.POSITIONAL_OR_KEYWORD)}
    by_name = (any(p.kind == P.VAR_KEYWORD for p in params) and not any(p.kind == P.VAR_POSITIONAL for p in params)
               and not set(names) <= positional)  # forward(self, **inputs): the given names are its keywords
    if not by_name and (not extras or any(p.default is P.empty or p.kind in (P.VAR_POSITIONAL, P.VAR_KEYWORD) for p in extras)
            or not set(names) <= {p.name for p in params}):
        return module  # nothing defaulted to keep, or inputs passed by position (one input of any name)

    class GivenInputs(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = module

        def forward(self, *args):
            return self.inner(**dict(zip(names, args)))

    return GivenInputs().eval()


def _check_module(module) -> None:
    import torch

    if not isinstance(module, torch.nn.Module):
        raise InputError(f"export_module needs a torch.nn.Module, not {type(module).__name__}.")


def _tuple_outputs(module, example: dict):
    """``(module, None)``; or, for a module that returns a dict of tensors (as transformers'
    ``ModelOutput`` is) or nested tuples (nn.LSTM's ``(output, (h, c))``), a wrapper returning its
    tensors flat, in order, and where a dict is in it the names of the graph's outputs: its keys (a
    nested part's as ``key_0``, ``key_1``). The ONNX exporters and the checks take tensors and flat tuples."""
    from collections.abc import Mapping

    import torch

    try:
        with torch.inference_mode():
            out = module(*example.values())
    except Exception:
        return module, None  # _outputs_on_example says why, in one sentence
    leaves = _leaves(out)
    if not leaves or isinstance(out, torch.Tensor) or (isinstance(out, (tuple, list)) and all(isinstance(o, torch.Tensor) for o in out)):
        return module, None  # a tensor or a flat tuple as it is; anything else torch_outputs names

    class FlatOutputs(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = module

        def forward(self, *inputs):
            return tuple(t for _, t in _leaves(self.inner(*inputs)))

    # output_0, output_1, ... for tuples, and for a digit key: torch.onnx.export refuses a graph name like '2' (review).
    # A dict inside a tuple keeps its keys after the tuple's index, (y, {"s": s}): output_0, output_1_s (review: lost)
    names = ([f"output_{k}" if k.isdigit() else k for k, _ in leaves] if isinstance(out, Mapping) else None
             if all(k.replace("_", "").isdigit() for k, _ in leaves) else [f"output_{k}" for k, _ in leaves])
    return FlatOutputs().eval(), names  # eval: torch.onnx.export restores a wrapper's mode, and train(True) reaches the inner module


def _leaves(out, key: str = "") -> list | None:
    """``[(name, tensor), ...]`` of a tensor, or of dicts, tuples and lists of them at any depth, in
    order; None where anything else (None, a number) is in it."""
    from collections.abc import Mapping

    import torch

    if isinstance(out, torch.Tensor):
        return [(key, out)]
    if not isinstance(out, (Mapping, tuple, list)) or not out:
        return None
    items = out.items() if isinstance(out, Mapping) else enumerate(out)
    found = [_leaves(v, f"{key}_{k}" if key else str(k)) for k, v in items]
    return None if any(f is None for f in found) else [leaf for f in found for leaf in f]


def _outputs_on_example(module, example: dict, shapes: str) -> int:
    """How many outputs the module gives; one sentence when it fails on its own example."""
    from edgeai.export.exporter import torch_outputs
    from edgeai.export.generic import _first_line

    try:
        return len(torch_outputs(module, example))
    except ExportError:
        raise
    except Exception as e:
        raise ExportError(f"The module fails on the example inputs ({shapes}): {type(e).__name__}: {_first_line(e)}") from None


def _output_names(names: list[str] | None, count: int, inputs: list[str]) -> list[str]:
    names = names or (["output"] if count == 1 else [f"output_{i}" for i in range(count)])
    if len(names) != count:
        raise InputError(f"{len(names)} output names for {count} outputs.")
    # The exporter would rename a clash ("x.1") and the package would then name the wrong tensor.
    twice = sorted({n for n in names if list(names).count(n) > 1})
    if twice:
        raise InputError(f"The output name{'s' if len(twice) > 1 else ''} {', '.join(map(repr, twice))} "
                         f"{'are' if len(twice) > 1 else 'is'} given to more than one output; each needs its own.")
    clash = [n for n in dict.fromkeys(names) if n in inputs]
    if clash:
        raise InputError(f"The output name{'s' if len(clash) > 1 else ''} {', '.join(map(repr, clash))} "
                         f"{'are' if len(clash) > 1 else 'is'} also an input's; an ONNX graph needs distinct names "
                         "(give others with output_names, or return a dict with other keys).")
    return list(names)


def _validation_feeds(example: dict, dynamic: dict) -> list[dict]:
    """The example, the example mirrored, new values of its shapes (within each tensor's range),
    then (with dynamic axes) new values with every dynamic axis one and two longer."""
    from edgeai.export.generic import fresh_values, resized

    return [example, fresh_values(example, seed=None), fresh_values(example, seed=1)] + [
        resized(example, dynamic, grow, seed=grow) for grow in ((1, 2) if dynamic else ())]
