"""Pre- and post-processors, looked up by the manifest's ``preprocess.type`` / ``postprocess.type``.

A new task is one module here (or in a plugin family, see :mod:`edgeai.families`) with a class
registered under its type name:

- a pre-processor: ``Cls(pkg, input_names)`` with ``kind`` (``"image"``/``"text"``) and
  ``batch(items) -> {input name: array}``;
- a post-processor: ``Cls(spec, pkg)`` with ``__call__(outputs, top_k=None) -> [result dict per item]``
  (the result shapes of DESIGN.md's Contracts); one with ``needs_inputs = True`` is also given
  the batch's raw inputs as ``items=`` (token classification reads offsets from the texts).

Entries are ``"module:Class"`` strings, imported on first use, so ``import edgeai`` stays cheap.
"""

from __future__ import annotations

import threading
from typing import Any

from edgeai.errors import InputError, PackageError, with_article

_PRE: dict[str, Any] = {
    "image": "edgeai.tasks.image:ImageInput",
    "text": "edgeai.tasks.text:TextInput",
}
_POST: dict[str, Any] = {
    "classification": "edgeai.tasks.classification:Classification",
    "embedding": "edgeai.tasks.embedding:Embedding",
    "none": "edgeai.tasks.tensor:Tensors",
    "token-classification": "edgeai.tasks.tokens:TokenClassification",
}
_LOCK = threading.Lock()


def check_top_k(package, k: Any) -> None:
    """Refuse a ``top_k`` that would be ignored (only classifiers rank classes) or is not a count:
    once, before a run (a bulk run checks it before its first batch, not as an error per input)."""
    import numpy as np

    if k is None:
        return
    if package.manifest.get("postprocess", {}).get("type") != "classification":
        raise InputError(f"top-k is for classifiers; {package.name} is {with_article(package.task)} model, whose results have no classes to rank.")
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise InputError(f"top_k is how many classes to return, a whole number of at least 1; got {k!r}.")


def register_preprocessor(kind: str, cls: Any) -> None:
    with _LOCK:
        _PRE[kind] = cls


def register_postprocessor(kind: str, cls: Any) -> None:
    with _LOCK:
        _POST[kind] = cls


def _resolve(table: dict[str, Any], kind: str, what: str) -> Any:
    entry = table.get(kind)
    if entry is None:
        from edgeai import families

        families.families()  # plugin families register their processors when loaded
        entry = table.get(kind)
    if entry is None:
        raise PackageError(f"The package's {what} type {kind!r} is not known to this edgeai "
                           f"(known: {', '.join(sorted(table))}); install the package that provides it.")
    if isinstance(entry, str):  # "module:Class"; not through edgeai.families, which run need not import
        import importlib

        module, _, attr = entry.partition(":")
        try:
            entry = getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError) as e:
            raise PackageError(f"The {what} type {kind!r} is provided by {entry!r}, which cannot be loaded ({e}).") from None
        with _LOCK:
            table[kind] = entry
    return entry


def preprocessor(pkg, input_names: list[str]):
    """The package's pre-processor, or None when it takes ready tensors (``type: none``)."""
    kind = pkg.manifest.get("preprocess", {"type": "none"})["type"]
    if kind == "none":
        return None
    return _resolve(_PRE, kind, "preprocess")(pkg, input_names)


def postprocessor(pkg):
    spec = pkg.manifest.get("postprocess", {"type": "none"})
    return _resolve(_POST, spec["type"], "postprocess")(spec, pkg)


def takes_arrays(pipe) -> bool:
    """Whether ``pipe`` runs arrays as they are (no preprocessing of its own): a tensor task,
    or any task Optimum exports without a tokenizer or image processor (feature-extraction...)."""
    return pipe._pre is None and "generation" not in pipe.package.manifest
