"""The checks on what ``export_module`` is given: its example tensors and its dynamic axes, each
refused in one sentence before anything is traced."""

from __future__ import annotations

import operator

from edgeai.errors import InputError


def tensors(example: object) -> dict:
    """``{name: tensor}``, numpy arrays converted; one sentence for anything else, and for a float
    example holding NaN or infinities (the export is checked on new values drawn from the
    example's range, which then has no bounds)."""
    import numpy as np
    import torch

    if not isinstance(example, dict) or not example:
        raise InputError(f"example_inputs is a dict of input name -> example tensor, e.g. {{'x': torch.rand(1, 3, 32, 32)}}; "
                         f"got {type(example).__name__}{' (empty)' if isinstance(example, dict) else ''}.")
    out = {}
    for name, value in example.items():
        if isinstance(value, np.ndarray):
            value = torch.from_numpy(np.ascontiguousarray(value))
        if not isinstance(value, torch.Tensor):
            raise InputError(f"example_inputs[{name!r}] is a {type(value).__name__}; each input's example is one tensor "
                             "(a forward that takes a dict or a list takes its parts as inputs of their own).")
        if (value.is_floating_point() or value.is_complex()) and not bool(torch.isfinite(value).all()):
            raise InputError(f"example_inputs[{name!r}] holds NaN or infinite values; give an example of real input "
                             "values (the export is checked on it and on new values drawn from its range).")
        out[str(name)] = value
    return out


def dynamic_axes(example: dict, dynamic: object) -> dict[str, dict[int, str]]:
    """A copy of ``dynamic`` whose every axis exists in the example (a negative one counted from
    the end) and has a name: given, or, in torch.onnx.export's list form ({"x": [0]}), ``x_dim0``."""
    if dynamic is None:
        return {}
    if not isinstance(dynamic, dict):
        raise InputError(f"dynamic maps input names to their dynamic axes, e.g. {{'x': {{0: 'batch'}}}}; got {type(dynamic).__name__}.")
    checked: dict[str, dict[int, str]] = {}
    for n, axes in dynamic.items():
        if n not in example:
            raise InputError(f"Dynamic axes name input {n!r}; the inputs are {list(example)}.")
        if not isinstance(axes, (dict, list, tuple)):
            raise InputError(f"dynamic[{n!r}] is {axes!r}; give its axes as {{0: 'batch'}} or [0].")
        dims, checked[n] = example[n].dim(), {}
        for axis, label in (axes if isinstance(axes, dict) else dict.fromkeys(axes)).items():
            try:
                at = operator.index(axis)
            except TypeError:
                raise InputError(f"dynamic[{n!r}] names axis {axis!r}; axes are numbers (0 for the first).") from None
            if not -dims <= at < dims:
                raise InputError(f"Input {n!r} has {dims} dimensions; there is no axis {at} to make dynamic.")
            label = f"{n}_dim{at % dims}" if label is None else label
            if not isinstance(label, str) or not label:
                raise InputError(f"Dynamic axis {at} of {n!r} is named {label!r}; name it with a string, e.g. {{{n!r}: {{{at}: 'batch'}}}}.")
            if checked[n].get(at % dims, label) != label:  # the last one would win, silently (as --dynamic says)
                raise InputError(f"dynamic[{n!r}] names axis {at % dims} twice: {checked[n][at % dims]!r} and {label!r}; give it one name.")
            checked[n][at % dims] = label
    sizes: dict[str, dict[str, int]] = {}  # one name is one size: the checks at other sizes grow them together
    for n, axes in checked.items():
        for at, label in axes.items():
            sizes.setdefault(label, {})[f"{n}'s axis {at}"] = int(example[n].shape[at])
    for label, where in sizes.items():
        if len(set(where.values())) > 1:  # review: a raw torch shape error from the checks at other sizes
            said = " and ".join(f"{w} ({v})" for w, v in where.items())
            raise InputError(f"The dynamic axes {said} share the name {label!r} but differ in size in the example; "
                             "one name is one size: give each its own name.")
    return checked
