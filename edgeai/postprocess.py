"""Turn raw outputs into the result dicts of the Contracts (DESIGN.md)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np


def to_jsonable(x: Any) -> Any:
    """Results (arrays, numpy scalars, nested dicts and lists) as plain JSON values; NaN and
    infinities as null, which JSON has (Python wrote NaN and Infinity, which jq and JSON.parse refuse)."""
    if isinstance(x, np.ndarray):
        if x.dtype.kind in "fc" and not np.isfinite(x).all():
            return np.where(np.isfinite(x), x.astype(object), None).tolist()
        return x.tolist()
    if isinstance(x, np.generic):
        x = x.item()
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {k: to_jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [to_jsonable(v) for v in x]
    return x


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=-1, keepdims=True)
    np.exp(z, out=z)
    z /= z.sum(axis=-1, keepdims=True)
    return z


def activate(scores: np.ndarray, activation: str) -> np.ndarray:
    scores = scores.astype(np.float32, copy=True)
    if activation == "softmax":
        return softmax(scores)
    if activation == "sigmoid":
        with np.errstate(over="ignore"):  # exp(-s) is inf below s = -88.7 in float32, and the score 0 as it should be
            return 1.0 / (1.0 + np.exp(-scores))
    return scores


def top_k(probs: np.ndarray, k: int, labels: list[str] | None) -> list[dict]:
    """``(n, classes)`` scores -> per row ``{"top_k": [{"index", "label", "score"}, ...]}``."""
    k = max(1, min(k, probs.shape[-1]))
    idx = np.argpartition(-probs, k - 1, axis=-1)[:, :k]
    results = []
    for row, cand in zip(probs, idx):
        order = cand[np.argsort(-row[cand], kind="stable")]
        results.append(
            {
                "top_k": [
                    {
                        "index": int(i),
                        "label": labels[i] if labels and i < len(labels) else str(int(i)),
                        "score": float(row[i]),
                    }
                    for i in order
                ]
            }
        )
    return results
