"""``optimize()``: add the ``optimized`` variant with the first optimization step that applies."""

from __future__ import annotations

import os

from edgeai.package import Package

from .runner import Context, Progress, Step, opened, run_step
from .steps.fuse_decoder import FuseDecoder
from .steps.fuse_transformer import FuseTransformer
from .steps.optimize import Optimize

# Most specific first: a step applies when its ``requires`` passes; the generic one always does.
OPTIMIZERS: tuple[Step, ...] = (FuseTransformer(), FuseDecoder(), Optimize())


def optimize(pkg: str | os.PathLike | Package, out: str | os.PathLike | None = None, progress: Progress | None = None,
             held_out: list[str] | None = None, measure_latency: bool = True) -> Package:
    """Add the ``optimized`` variant: ONNX Runtime's offline graph optimization, extended level
    (for transformer and text-generation packages, its transformer optimizer). See
    steps/optimize.py, steps/fuse_transformer.py and steps/fuse_decoder.py. With
    ``measure_latency``, every variant is then timed on this CPU, as ``quantize`` does: the new
    variant replaces the old one's figures, and ``auto`` chooses by figures (export times once, at
    its end)."""
    with opened(pkg, out) as pkg:
        step = next(s for s in OPTIMIZERS if s.applies(pkg))
        return run_step(step, pkg, Context(progress=progress, held_out=held_out), measure_latency)
