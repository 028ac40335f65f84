"""Bring your own model: the sources of the ``custom`` family (export/families/custom.py).

    from edgeai.export import export_module
    export_module(model, {"x": torch.randn(1, 3, 32, 32)}, "mymodel/", dynamic={"x": {0: "batch"}})

or from the command line, with a factory function in a Python file:

    edgeai export path/to/file.py:make_model --input x:1,3,32,32:float32 --dynamic x:0:batch

A factory that loads weights should use :func:`load_weights` (safetensors, or ``torch.load``
with ``weights_only=True``): edgeai never unpickles arbitrary objects.
"""

from __future__ import annotations

import importlib.util
import inspect
import math
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path

from edgeai.errors import ExportError, InputError

DTYPES = ("float32", "float16", "int64", "int32", "bool")


_NUMBER = r"[-+]?(?:\d+(?:\.\d+)?|\.\d+)(?:[eE][-+]?\d+)?"  # 3, -0.5, .5, 1e30, 2.5E-3


@dataclass(frozen=True)
class InputSpec:
    name: str
    shape: tuple[int, ...]
    dtype: str
    low: float | None = None  # the example's values: LOW..HIGH (integers: both included)
    high: float | None = None

    @classmethod
    def parse(cls, text: str) -> "InputSpec":
        """``NAME:SHAPE:DTYPE[:LOW..HIGH]``, e.g. ``x:1,3,32,32:float32`` or ``ids:1,12:int64:0..3``
        (an embedding of 4 rows: the default integers, 0..9, would index past it)."""
        m = re.fullmatch(rf"([A-Za-z_][\w.]*):(\d+(?:,\d+)*):(\w+)(?::({_NUMBER})\.\.({_NUMBER}))?", text.strip())
        if not m and re.fullmatch(r"([A-Za-z_][\w.]*):(\d+(?:,\d+)*):(\w+):.*", text.strip()):
            raise InputError(f"--input {text!r}: the value range should be LOW..HIGH with two numbers, e.g. 0..1 or -1e3..1e3.")
        if not m:
            raise InputError(f"--input {text!r} should look like NAME:SHAPE:DTYPE[:LOW..HIGH], e.g. x:1,3,32,32:float32 "
                             "or ids:1,12:int64:0..99.")
        if m.group(3) not in DTYPES:
            raise InputError(f"--input {text!r} has dtype {m.group(3)!r}; choose one of {', '.join(DTYPES)}.")
        shape = tuple(int(d) for d in m.group(2).split(","))
        if 0 in shape:
            raise InputError(f"--input {text!r} has a zero-sized dimension.")
        low, high = (None, None) if m.group(4) is None else (float(m.group(4)), float(m.group(5)))
        if low is not None:
            if not (math.isfinite(low) and math.isfinite(high)):
                raise InputError(f"--input {text!r}: the range's ends should be finite numbers.")
            if m.group(3) == "bool":
                raise InputError(f"--input {text!r}: a bool input takes no value range.")
            import numpy as np

            info = np.finfo(m.group(3)) if m.group(3).startswith("float") else np.iinfo(m.group(3))
            if low < float(info.min) or high > float(info.max):  # torch would wrap or overflow them silently
                raise InputError(f"--input {text!r}: {m.group(3)} holds {float(info.min):g}..{float(info.max):g}; the range should lie within it.")
            if low > high or (m.group(3).startswith("int") and not (low.is_integer() and high.is_integer())):
                raise InputError(f"--input {text!r}: the range should be LOW..HIGH with LOW <= HIGH"
                                 f"{' (whole numbers for ' + m.group(3) + ')' if m.group(3).startswith('int') else ''}.")
        return cls(m.group(1), shape, m.group(3), low, high)


def parse_dynamic(items: list[str], names: list[str]) -> dict[str, dict[int, str]]:
    """``NAME:AXIS:LABEL`` entries -> ``{name: {axis: label}}``."""
    axes: dict[str, dict[int, str]] = {}
    for text in items:
        m = re.fullmatch(r"([A-Za-z_][\w.]*):(-?\d+):([A-Za-z_]\w*)", text.strip())
        if not m:
            raise InputError(f"--dynamic {text!r} should look like NAME:AXIS:LABEL, e.g. x:0:batch.")
        if m.group(1) not in names:
            raise InputError(f"--dynamic {text!r} names input {m.group(1)!r}; the inputs are {names}.")
        name, axis, label = m.group(1), int(m.group(2)), m.group(3)
        if axis < 0:
            raise InputError(f"--dynamic {text!r}: count the axis from the front (0 is the first), not from the end.")
        if axes.get(name, {}).get(axis, label) != label:  # the last one would win, silently
            raise InputError(f"--dynamic names {name}'s axis {axis} twice: {axes[name][axis]!r} and {label!r}; give it one name.")
        axes.setdefault(name, {})[axis] = label
    return axes


def load_factory(ref: str):
    """``path/to/file.py:factory`` -> the module the factory returns."""
    import torch

    path_text, _, attr = ref.rpartition(":")
    path = Path(path_text)
    if not path_text.endswith(".py") or not attr:
        raise InputError(f"{ref!r} should be FILE.py:FACTORY, e.g. models/net.py:make_model.")
    if not path.is_file():
        raise InputError(f"The model file {path} does not exist.")
    # As `python FILE.py` would: the file's folder is on sys.path, so that a model split over
    # several files (`from layers import Block`) imports its neighbours. A file inside a package
    # (folders with __init__.py) is imported as `python -m pkg.file` would, under its dotted name
    # with the package's parent on sys.path, so that its relative imports (`from .layers ...`) work.
    name, root = _dotted_name(path)
    top = sys.modules.get(name.split(".")[0]) if "." in name else None
    if top is not None and not Path(getattr(top, "__file__", None) or "/").resolve().is_relative_to(root):
        raise InputError(f"{path} is in a package named {name.split('.')[0]!r}, the name of a module already imported "
                         f"from {Path(top.__file__).parent}: rename its folder.")
    folders = [f for f in dict.fromkeys([str(path.resolve().parent), str(root)]) if f not in sys.path]
    sys.path[:0] = folders
    before = set(sys.modules)
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod  # what relative imports and dataclasses (string annotations) look the module up by
    try:
        try:
            spec.loader.exec_module(mod)
        except (Exception, SystemExit) as e:  # a script's sys.exit() at import time too
            raise ExportError(f"Importing {path} failed: {type(e).__name__}: {_first_line(e)}") from None
        factory = getattr(mod, attr, None)
        if not callable(factory):
            raise InputError(f"{path} has no function {attr!r}.")
        import inspect

        try:
            needed = [p.name for p in inspect.signature(factory).parameters.values()
                      if p.default is p.empty and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
        except (TypeError, ValueError):  # a builtin or C callable: called as it is
            needed = []
        if needed:  # a class (Net(classes)) or a function that needs its arguments (review: TypeError's own sentence)
            raise InputError(f"{attr} in {path} needs the argument{'s' if len(needed) > 1 else ''} {', '.join(needed)}, and a "
                             f"factory is called with none: add one that gives them, e.g. def make(): return {attr}(...), "
                             f"and export {path.name}:make.")
        try:
            module = factory()
        except (Exception, SystemExit) as e:
            raise ExportError(f"The factory {attr}() in {path} raised {type(e).__name__}: {_first_line(e)}") from None
    finally:
        for f in folders:
            if f in sys.path:
                sys.path.remove(f)
        _forget(set(sys.modules) - before, before, root)
    if not isinstance(module, torch.nn.Module):
        raise ExportError(f"The factory {attr}() in {path} returned an object of type {type(module).__name__}, "
                          "not a torch.nn.Module.")
    return module


def _forget(added: set[str], before: set[str], root: Path) -> None:
    """Drop the user's modules this import added (its package, its neighbours: files under
    ``root``), so that another factory with a ``layers.py`` of its own is not given this one's;
    the classes already made keep their code. Modules of packages imported before stay."""
    for key in added:
        file = getattr(sys.modules.get(key), "__file__", None)
        if key.split(".")[0] not in before and file and Path(file).resolve().is_relative_to(root):
            del sys.modules[key]


def _dotted_name(path: Path) -> tuple[str, Path]:
    """``(module name, folder above its top package)``: ``pkg.sub.net`` for pkg/sub/net.py when
    pkg/ and pkg/sub/ hold an ``__init__.py``; a file outside any package gets a private name."""
    parts, folder = [path.stem], path.resolve().parent
    while (folder / "__init__.py").is_file() and folder.name.isidentifier() and folder.parent != folder:
        parts.insert(0, folder.name)
        folder = folder.parent
    return (".".join(parts) if len(parts) > 1 else f"edgeai_user_{path.stem}"), folder


def in_forward_order(module, example: dict) -> dict:
    """``example`` reordered as ``module.forward`` takes its parameters (the export passes inputs
    by position); one sentence when the names do not fit forward's parameters. A forward with
    ``*args``/``**kwargs`` takes any names: those naming its parameters come first, in its order;
    a forward of one parameter takes one input of any name."""
    try:
        params = list(inspect.signature(module.forward).parameters.values())
    except (TypeError, ValueError):  # no Python signature (a scripted or C++ forward): trust the order given
        return dict(example)
    P = inspect.Parameter
    positional = [p for p in params if p.kind in (P.POSITIONAL_ONLY, P.POSITIONAL_OR_KEYWORD)]
    if len(example) == 1 and len(params) == len(positional) == 1:
        return dict(example)  # one input, one parameter: nothing to misplace (nn.Sequential's is "input")
    order = [p.name for p in positional if p.name in example]
    if any(p.kind in (P.VAR_POSITIONAL, P.VAR_KEYWORD) for p in params):
        return {n: example[n] for n in [*order, *(n for n in example if n not in order)]}
    keyword_only = [p.name for p in params if p.kind == P.KEYWORD_ONLY and p.name in example]
    if keyword_only:  # the export passes inputs by position: a keyword-only parameter cannot be one
        raise InputError(f"forward() takes {', '.join(keyword_only)} as keyword-only (after *), and an exported graph "
                         "passes its inputs by position: make it an ordinary parameter of forward, or give it a default "
                         "and leave it out of the inputs.")
    required = [p.name for p in params if p.default is P.empty]
    unknown = [n for n in example if n not in order]
    if unknown or any(n not in example for n in required):
        raise InputError(f"forward() takes {_params_text(params)}, but the inputs given are named {', '.join(example)}: "
                         "name each input after one of forward's parameters, and give every parameter without a default.")
    given_last = max(i for i, p in enumerate(positional) if p.name in example) if example else -1
    skipped = [p.name for p in positional[:given_last] if p.name not in example]
    if skipped:
        raise InputError(f"forward() takes {_params_text(params)}, and the inputs are passed in that order: give "
                         f"{', '.join(skipped)} too, since {positional[given_last].name} comes after.")
    return {n: example[n] for n in order}


def no_bfloat16(module, example: dict) -> None:
    """One sentence for bfloat16 weights or inputs: ONNX Runtime's CPU provider has no bfloat16
    kernels for Gemm, MatMul or Conv, and numpy no bfloat16 to compare with (review: "The module
    fails on the example inputs: TypeError: Got unsupported ScalarType BFloat16")."""
    import torch

    where = [f"The module's weight {n!r}" for n, t in [*module.named_parameters(), *module.named_buffers()]
             if t.dtype == torch.bfloat16][:1] + [f"The example input {n!r}" for n, t in example.items() if t.dtype == torch.bfloat16]
    if where:
        raise InputError(f"{where[0]} is bfloat16, which ONNX Runtime cannot run (no bfloat16 Gemm, MatMul or Conv on CPU): "
                         "export module.float() with float32 inputs (or .half() for float16 weights).")


def _params_text(params: list) -> str:
    return "(" + ", ".join(p.name + ("=..." if p.default is not p.empty else "") for p in params) + ")"


def load_weights(module, path: str | os.PathLike, strict: bool = True):
    """Load a state dict from ``.safetensors`` or a ``torch.save`` file (``weights_only=True``)."""
    import torch

    path = Path(path)
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(path))
    else:
        import pickle

        try:
            state = torch.load(str(path), map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as e:  # torch's own text ends in "two options" it leaves to a link
            if "Unsupported global" not in str(e):  # not a checkpoint at all (a saved web page, a truncated file)
                raise InputError(f"{path} is not a PyTorch checkpoint that torch.load can read: "
                                 f"{_first_line(e)}") from None
            raise InputError(f"{path} holds more than weights (a whole pickled model, or objects of other classes), and "
                             "loading it would run code from the file: save model.state_dict() with torch.save instead "
                             "(or as .safetensors).") from None
    module.load_state_dict(_weights_of(state, module), strict=strict)
    return module


def _weights_of(state, module) -> dict:
    """The state dict inside a training checkpoint, as timm's loader reads one: ``{"state_dict": ...,
    "epoch": ...}`` (or ``model_state_dict``, ``model``) unwrapped, and ``DataParallel``'s
    ``module.`` prefix dropped where the module's own names lack it (review: load_state_dict's
    sentence of every missing and unexpected key)."""
    import torch

    if isinstance(state, dict) and not any(isinstance(v, torch.Tensor) for v in state.values()):
        inner = [state[k] for k in ("state_dict", "model_state_dict", "model") if isinstance(state.get(k), dict)]
        state = inner[0] if inner else state
    if isinstance(state, dict) and state and all(str(k).startswith("module.") for k in state) \
            and not any(k.startswith("module.") for k in module.state_dict()):
        state = {k[len("module."):]: v for k, v in state.items()}
    return state


def _first_line(e: BaseException) -> str:
    """The error's first line; where it ends in ":" (load_state_dict's "Error(s) in loading
    state_dict for Linear:"), the lines that say what, joined. Terminal colour codes removed."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(e)).strip()
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()] or [type(e).__name__]
    first = lines[0]
    if first.endswith(":") and len(lines) > 1:
        first = " ".join(lines[:6])
    return first[:400]


def example_tensors(specs: list[InputSpec], seed: int = 0) -> dict:
    import torch

    g = torch.Generator().manual_seed(seed)
    out = {}
    for s in specs:
        if s.dtype.startswith("float"):
            values = torch.randn(s.shape, generator=g) if s.low is None else s.low + (s.high - s.low) * torch.rand(s.shape, generator=g)
            out[s.name] = values.to(getattr(torch, s.dtype))
        elif s.dtype == "bool":
            out[s.name] = torch.rand(s.shape, generator=g) > 0.5
        else:  # token ids / indices: small non-negative values stay valid for most embeddings
            low, high = (0, 9) if s.low is None else (int(s.low), int(s.high))
            out[s.name] = torch.randint(low, high + 1, s.shape, generator=g).to(getattr(torch, s.dtype))
    return out


def _drawn_like(t, shape, g):
    """New values of ``t``'s dtype and of ``shape``, within ``t``'s own range (a model fed
    positive pixels or valid token ids gets such values again; normal noise where the range is
    one value)."""
    import torch

    if t.dtype == torch.bool:
        return torch.rand(shape, generator=g) > 0.5
    if t.dtype.is_floating_point:
        if t.numel() and float(t.max()) > float(t.min()):
            lo, hi = float(t.min()), float(t.max())
            return (lo + (hi - lo) * torch.rand(shape, generator=g)).to(t.dtype)
        return torch.randn(shape, generator=g).to(t.dtype)
    lo, hi = (int(t.min()), int(t.max())) if t.numel() else (0, 0)
    return torch.randint(lo, hi + 1, shape, generator=g).to(t.dtype)


def fresh_values(example: dict, seed: int | None) -> dict:
    """The example's shapes with other values: what catches a trace frozen to the example's
    values rather than to its sizes. ``seed=None`` mirrors the example: ``-x`` where it holds
    both signs, else ``lo + hi - x``, which turns every sum or mean of it to the other side of
    its middle (an ``if x.sum() > 0`` takes its other branch); a seed draws new values within
    each tensor's range (``_drawn_like``)."""
    import torch

    if seed is not None:
        g = torch.Generator().manual_seed(seed)
        return {name: _drawn_like(t, t.shape, g) for name, t in example.items()}
    out = {}
    for name, t in example.items():
        if not t.numel():
            out[name] = t.clone()
        elif t.dtype == torch.bool:
            out[name] = ~t
        else:
            lo, hi = t.min(), t.max()
            out[name] = -t if t.dtype.is_floating_point and lo < 0 < hi else (lo + hi) - t
    return out


def resized(example: dict, dynamic: dict[str, dict[int, str]], grow: int, seed: int) -> dict:
    """The example with every dynamic axis ``grow`` longer (same label -> same size), new values
    within the example's range."""
    sizes: dict[str, int] = {}
    for name, axes in dynamic.items():
        for axis, label in axes.items():
            sizes.setdefault(label, example[name].shape[axis] + grow)
    return _at_sizes(example, dynamic, sizes, seed)


def _at_sizes(example: dict, dynamic: dict[str, dict[int, str]], sizes: dict[str, int], seed: int) -> dict:
    """New values of the example's ranges, each dynamic axis at its label's size in ``sizes`` (as given if absent)."""
    import torch

    g = torch.Generator().manual_seed(seed)
    out = {}
    for name, t in example.items():
        shape = list(t.shape)
        for axis, label in dynamic.get(name, {}).items():
            shape[axis] = sizes.get(label, shape[axis])
        out[name] = _drawn_like(t, shape, g)
    return out


def trace_example(example: dict, dynamic: dict) -> dict:
    """A dynamic axis of size 1 in the example is traced at size 2 instead: code paths that
    special-case 1 (squeeze, broadcasting, nn.MultiheadAttention's reshapes) would otherwise
    freeze it. The user's own example is still one of the validation inputs."""
    sizes = {label: example[n].shape[a] for n, axes in dynamic.items() for a, label in axes.items()}
    ones = {label for label, size in sizes.items() if size == 1}
    if not ones:
        return example
    # Only the axes of size 1 grow, each to a size no other dynamic axis has (equal sizes can be
    # confused by the trace): grown too, a positional table of 16 was traced at 17 and failed (review).
    taken, grown = set(sizes.values()), {}
    for label in sorted(ones):
        grown[label] = next(n for n in range(2, 10**6) if n not in taken)
        taken.add(grown[label])
    return _at_sizes(example, dynamic, grown, seed=0)  # new values within the example's range, as before
