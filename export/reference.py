"""The PyTorch model a package was exported from, on the same weights (for ``bench --against torch``).

Each family's ``reference`` hook (edgeai.families) rebuilds its model; a new family plugs in by
naming one, and ``bench`` and ``report`` do not change. A custom model's code is never run from
the package: the user names it with ``--factory FILE.py:FN``.
"""

from __future__ import annotations

from edgeai import families
from edgeai.errors import InputError
from edgeai.package import Package


def reference_module(pkg: Package, factory: str | None = None):
    """An ``nn.Module`` in eval mode whose ``forward`` takes the package's inputs in order."""
    if factory is not None:
        from .generic import load_factory

        return load_factory(factory).eval()
    family = families.get(pkg.manifest["family"])
    if not family.has_hook("reference"):
        raise InputError(f"{pkg.name} is a {family.name} model: name the PyTorch code that builds it with --factory FILE.py:FN.")
    return family.hook("reference")(pkg)
