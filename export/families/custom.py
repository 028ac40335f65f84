"""``custom``: any ``torch.nn.Module`` (``edgeai export FILE.py:FACTORY``, ``export_module``) or a plain .onnx file."""

from __future__ import annotations

from pathlib import Path

from edgeai.families import Budget, Family, Option

FAMILY = Family(
    name="custom",
    task="tensor",
    tasks=("tensor",),
    description="Your own nn.Module (FILE.py:FACTORY) or .onnx file: arrays in, arrays out",
    budget=Budget("cosine_min", 0.999, "lowest cosine similarity of each sample's outputs to fp32 on seeded random inputs"),
    tolerance=1e-4,
    options=(
        Option("input", "Example input NAME:SHAPE:DTYPE, e.g. x:1,3,32,32:float32 (repeat for several).", multiple=True),
        Option("dynamic", "NAME:AXIS:LABEL of an axis that may change size, e.g. x:0:batch.", multiple=True),
        Option("calibration", "With --precision int8: directory of .npy/.npz feeds for static INT8 (dynamic INT8 without it).",
               kind=Path),
    ),
    build="edgeai.export:export_factory",
    rank=3,
)
