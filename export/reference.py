"""The PyTorch model a package was exported from, on the same weights (for ``bench --against torch``).

Each family's exporter module knows how to rebuild its model: it has a ``reference(pkg)``
function. A new family plugs in by adding its module to ``FAMILIES``; ``bench`` and ``report``
do not change. A custom model's code is never run from the package: the user names it with
``--factory FILE.py:FN``.
"""

from __future__ import annotations

import importlib

from edgeai.errors import InputError
from edgeai.package import Package

FAMILIES = {"cnn": "cnn", "transformer": "transformer", "lstm": "lstm"}


def reference_module(pkg: Package, factory: str | None = None):
    """An ``nn.Module`` in eval mode whose ``forward`` takes the package's inputs in order."""
    if factory is not None:
        from .generic import load_factory

        return load_factory(factory).eval()
    family = pkg.manifest["family"]
    if family not in FAMILIES:
        raise InputError(f"{pkg.name} is a {family} model: name the PyTorch code that builds it with --factory FILE.py:FN.")
    return importlib.import_module(f"{__package__}.{FAMILIES[family]}").reference(pkg)
