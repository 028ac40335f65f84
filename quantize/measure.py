"""Output agreement between variants, as recorded in the manifest (latency: edgeai.bench)."""

from __future__ import annotations

import numpy as np


def compare(reference: dict[str, np.ndarray], other: dict[str, np.ndarray], task: str) -> dict[str, float]:
    """Max/mean abs difference per output; top-1 agreement for classifiers; cosine for embeddings."""
    figures: dict[str, float] = {}
    for diffs in per_output(reference, other).values():
        figures["max_abs_diff"] = max(figures.get("max_abs_diff", 0.0), diffs["max_abs_diff"])
        figures["mean_abs_diff"] = max(figures.get("mean_abs_diff", 0.0), diffs["mean_abs_diff"])
    ref = next(iter(reference.values())).astype(np.float64)
    oth = other[next(iter(reference))].astype(np.float64)
    if task in ("image-classification", "text-classification"):
        figures["top1_agreement"] = float((ref.argmax(-1) == oth.argmax(-1)).mean())
    if task in ("text-embedding", "tensor"):
        cos = cosine(ref, oth)
        figures["cosine_min"] = float(cos.min())
        figures["cosine_mean"] = float(cos.mean())
    return figures


def per_output(reference: dict[str, np.ndarray], other: dict[str, np.ndarray]) -> dict[str, dict[str, float]]:
    """Max and mean absolute difference of each output (``compare`` keeps the worst of them)."""
    figures = {}
    for name, ref in reference.items():
        diff = np.abs(ref.astype(np.float64) - other[name].astype(np.float64))
        figures[name] = {"max_abs_diff": float(diff.max()), "mean_abs_diff": float(diff.mean())}
    return figures


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine similarity."""
    a = a.reshape(len(a), -1)
    b = b.reshape(len(b), -1)
    return (a * b).sum(1) / np.maximum(np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1), 1e-12)


def run_batches(session_run, feeds: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    outs: dict[str, list[np.ndarray]] = {}
    for feed in feeds:
        for k, v in session_run(feed).items():
            outs.setdefault(k, []).append(v)
    return {k: np.concatenate(v) for k, v in outs.items()}
