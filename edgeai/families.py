"""Model families: one registered object each, read by every stage and the CLI.

A family says what edgeai needs to know about a kind of model without importing torch: its
name, the built-in model (and aliases) that ``edgeai export NAME``, ``edgeai run --model NAME``
and ``edgeai.load(NAME)`` build, its task, default tensor specs with named dynamic axes, pre- and
post-processing, its accuracy budget and export tolerance, the extra ``edgeai export`` options it
takes, and lazy hooks, named ``"module:function"`` and imported only when called, which
alone may import torch:

- ``build(out, precision=..., progress=..., **options) -> Package``: export the family's model;
- ``reference(pkg) -> torch.nn.Module``: the PyTorch model on the package's weights (``bench --against torch``);
- ``evaluation(pkg) -> (held_out_texts, tuning_texts, after) | None`` (optional): the held-out
  set the export measured on, rebuilt for a later ``optimize``/``quantize`` of the package, and
  ``after(pkg)``, which records the family's own figures (the LSTM's test accuracy).

``hooks="module"`` names a module whose functions of those names are the hooks; ``build=`` etc.
point at one elsewhere.

Built-in families and third-party ones register the same way, through the entry-point group
``edgeai.families`` (see pyproject.toml and the README, "Architecture")::

    [project.entry-points."edgeai.families"]
    regressor = "my_package.family:FAMILY"

A family may also bring pre- and post-processors for new manifest ``preprocess.type`` /
``postprocess.type`` values (``postprocessors={"regression": "my_package.family:Regression"}``);
they are registered with the family (see edgeai.tasks for their interface). :func:`register` adds one in-process (tests, notebooks).
"""

from __future__ import annotations

import importlib
import threading
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from .errors import InputError, PackageError

ENTRY_POINT_GROUP = "edgeai.families"


@dataclass(frozen=True)
class Budget:
    """The accuracy a lossy variant must keep, judged by ``edgeai.data.compare.budget_met``."""

    metric: str  # a key of a variant's ``accuracy``: top1_agreement, cosine_min, ...
    min: float
    description: str = ""
    also: Mapping[str, float] = field(default_factory=dict)  # further minimums, e.g. {"cosine_mean": 0.99}

    def as_manifest(self, description: str | None = None) -> dict:
        d = {"metric": self.metric, "min": self.min, "description": description or self.description}
        return {**d, "also": dict(self.also)} if self.also else d


@dataclass(frozen=True)
class Option:
    """An ``edgeai export`` option that only this family takes (e.g. ``--data`` for lstm)."""

    name: str  # the keyword the build hook receives
    help: str
    default: Any = None
    kind: type = str  # str, int, float or pathlib.Path
    multiple: bool = False  # may be repeated; the hook receives a list
    choices: tuple[str, ...] = ()

    @property
    def flag(self) -> str:
        return "--" + self.name.rstrip("_").replace("_", "-")


@dataclass(frozen=True)
class Family:
    name: str  # written in manifests as "family"
    task: str  # the default task (an export may choose another the family supports)
    description: str = ""
    model: str | None = None  # the built-in model this family builds by name; None: nothing to build
    aliases: tuple[str, ...] = ()
    tasks: tuple[str, ...] = ()  # every task it exports ("task" included)
    inputs: tuple[Mapping, ...] = ()  # default tensor specs: {"name", "dtype", "shape": [named axes or sizes]}
    outputs: tuple[Mapping, ...] = ()
    preprocess: Mapping | None = None
    postprocess: Mapping | None = None
    budget: Budget | None = None
    tolerance: float = 1e-4  # fp32 ONNX vs PyTorch, relative (|a - b| / (1 + |b|))
    options: tuple[Option, ...] = ()
    hooks: str | None = None  # a module whose build/reference/evaluation functions are the hooks
    build: str | None = None  # "module:function", where a hook lives elsewhere
    example: str | None = None  # no longer called; accepted so that a family written for it still loads
    reference: str | None = None
    evaluation: str | None = None  # (held-out texts, tuning texts, after(pkg)) for a later optimize/quantize
    preprocessors: Mapping[str, str] = field(default_factory=dict)  # preprocess type -> "module:Class" (edgeai.tasks)
    postprocessors: Mapping[str, str] = field(default_factory=dict)  # postprocess type -> "module:Class"
    rank: int = 100  # listing order (edgeai's own families come first)
    fx_traceable: bool = True  # torch.fx traces its reference models (--method qat rewrites them so)

    def __post_init__(self) -> None:
        if not self.tasks:
            object.__setattr__(self, "tasks", (self.task,))

    def hook(self, which: str) -> Callable:
        """The ``build``/``reference``/``evaluation`` function, imported now (it may import torch)."""
        fn = self._hook(which)
        if fn is None:
            raise InputError(f"The {self.name} family has no {which} step.")
        return fn

    def has_hook(self, which: str) -> bool:
        return self._hook(which) is not None

    def _hook(self, which: str) -> Callable | None:
        ref = getattr(self, which)
        if ref is not None:
            return load_object(ref)
        return getattr(importlib.import_module(self.hooks), which, None) if self.hooks else None

    @property
    def names(self) -> tuple[str, ...]:
        return ((self.model,) if self.model else ()) + self.aliases


def load_object(ref: str) -> Any:
    module, _, attr = ref.partition(":")
    obj = importlib.import_module(module)
    for part in attr.split(".") if attr else ():
        obj = getattr(obj, part)
    return obj


_REGISTRY: dict[str, Family] = {}
_LOCK = threading.Lock()
_loaded = False


def register(family: Family, replace: bool = False) -> Family:
    """Add ``family`` to the registry (and its post-processors to edgeai.tasks)."""
    with _LOCK:
        old = _REGISTRY.get(family.name)
        if old is not None and old != family and not replace:
            raise ValueError(f"A family named {family.name!r} is already registered.")
        taken = {n: f.name for f in _REGISTRY.values() if f.name != family.name for n in f.names}
        clash = [n for n in family.names if n in taken]
        if clash:
            raise ValueError(f"Family {family.name!r} names {clash[0]!r}, which family {taken[clash[0]]!r} already uses.")
        _REGISTRY[family.name] = family
    if family.preprocessors or family.postprocessors:
        from . import tasks

        for kind, ref in family.preprocessors.items():
            tasks.register_preprocessor(kind, ref)
        for kind, ref in family.postprocessors.items():
            tasks.register_postprocessor(kind, ref)
    return family


def _load_entry_points() -> None:
    """Every family that an installed distribution declares under ``edgeai.families``, once."""
    global _loaded
    if _loaded:
        return
    from importlib.metadata import entry_points

    for ep in sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
        try:
            family = ep.load()
        except Exception as e:  # a broken plugin must not take the built-ins down with it
            warnings.warn(f"edgeai: the family {ep.name!r} ({ep.value}) could not be loaded: {type(e).__name__}: {e}",
                          stacklevel=2)
            continue
        if not isinstance(family, Family):
            warnings.warn(f"edgeai: the entry point {ep.name!r} ({ep.value}) is not an edgeai.families.Family.", stacklevel=2)
            continue
        if family.name in _REGISTRY and _REGISTRY[family.name] is not family:
            warnings.warn(f"edgeai: the family {family.name!r} of entry point {ep.value} is already registered; "
                          "keeping the first.", stacklevel=2)
            continue
        try:
            register(family)
        except ValueError as e:  # a name or alias another family uses: skip this one, keep the rest
            warnings.warn(f"edgeai: the family of entry point {ep.value} was not registered: {e}", stacklevel=2)
    _loaded = True


def reload() -> None:
    """Read the entry points again (after installing a plugin in a running process)."""
    global _loaded
    _loaded = False
    _load_entry_points()


def families() -> dict[str, Family]:
    """Every registered family by name, built-ins first."""
    _load_entry_points()
    return dict(sorted(_REGISTRY.items(), key=lambda kv: (kv[1].rank, kv[0])))


def get(name: str) -> Family:
    """The family a manifest names; one sentence when no installed package provides it."""
    fam = families().get(name)
    if fam is None:
        raise PackageError(f"No model family {name!r} is installed (installed: {', '.join(families())}); "
                           "install the package that provides it.")
    return fam


def builtin_models() -> dict[str, Family]:
    """Model name -> family, for every family that builds a model by name."""
    return {f.model: f for f in families().values() if f.model}


def resolve(name: str) -> Family | None:
    """The family whose built-in model is called ``name`` (or an alias), else None."""
    key = name.strip().lower()
    return next((f for f in families().values() if key in f.names), None)


def names_line() -> str:
    """``efficientnet-lite0 (cnn), bert (minilm), ...``: built-in models for messages and help."""
    return ", ".join(f"{f.model} ({', '.join(f.aliases)})" if f.aliases else f.model for f in builtin_models().values())
