"""One row per call for a dynamic INT8 variant of a batch model (images, tensors).

Dynamic INT8 picks its activation scales per call, over the whole batch, so a row's result
depends on the rows beside it: a 64-256-10 MLP's row agreed with fp32 at cosine 0.9999 alone and
0.82 beside a row 100 times larger (review). Text models run such a variant one text per call
(:func:`edgeai.text.one_text_per_call`); this does the same for other models wherever the
manifest says the rows are a batch: every input and every output carries one dynamic axis named
``batch`` (or ``batch_size``). A model whose outputs do not (a sum over the batch) runs its batch
as given, and so does one whose rows' other output sizes follow the data. The
quantize step measures a variant the way it runs here, and bench times it so, so the recorded
agreement and latency are the ones users get.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

import numpy as np

from .data.feeds import BATCH_NAMES, batch_axis

Axes = tuple[dict[str, int], dict[str, int]]


def row_axes(manifest: Mapping[str, Any]) -> Axes | None:
    """The batch axis of each input and of each output, where all share one dynamic axis named as
    a batch (``batch``, ``batch_size``): an axis of another name (points, nodes, tokens) may be
    one whose rows the model mixes, and splitting it would change what the model computes."""
    label, ins, outs = None, {}, {}
    for spec in manifest["inputs"]:
        shape = spec.get("shape") or []
        axis = batch_axis(shape)
        if not shape or str(shape[axis]).lower() not in BATCH_NAMES or label not in (None, shape[axis]):
            return None
        if list(shape).count(shape[axis]) > 1:  # [batch, batch]: rows against rows, never one alone
            return None
        label, ins[spec["name"]] = shape[axis], axis
    for spec in manifest["outputs"]:
        shape = spec.get("shape") or []
        axis = next((a for a, d in enumerate(shape) if d == label), None)
        if axis is None or list(shape).count(label) > 1:  # a batch's similarity matrix: its rows see each other
            return None
        outs[spec["name"]] = axis
    return (ins, outs) if ins else None


def per_row(manifest: Mapping[str, Any], variant: Mapping[str, Any]) -> Axes | None:
    """The axes to run ``variant`` (a manifest entry) one row per call on, or None to run batches whole."""
    if (variant.get("recipe") or {}).get("method") != "dynamic":
        return None
    return row_axes(manifest)


def run_rows(run: Callable[[dict], dict], feed: Mapping[str, Any], axes: Axes | None) -> dict:
    """``run(feed)``, one row per call along ``axes`` (from :func:`per_row`) when the feed has
    several; outputs joined again on their batch axes."""
    ins, outs = axes or ({}, {})
    if not axes or set(feed) != set(ins) or any(not isinstance(v, np.ndarray) or v.ndim <= ins[k] for k, v in feed.items()):
        return run(feed)  # OrtValues, or a feed the session's own checks will refuse in one sentence
    sizes = {v.shape[ins[k]] for k, v in feed.items()}
    if len(sizes) != 1 or sizes.pop() <= 1:
        return run(feed)
    parts = [run(row) for row in split_rows(feed, ins)]
    joined = {}
    for k in parts[0]:
        axis = outs.get(k, 0)
        if len({p[k].shape[:axis] + p[k].shape[axis + 1:] for p in parts}) != 1:
            return run(feed)  # outputs whose other sizes follow the data (a count of detections): the batch whole
        joined[k] = np.concatenate([p[k] for p in parts], axis=axis)
    return joined


def split_rows(feed: Mapping[str, np.ndarray], ins: Mapping[str, int]) -> list[dict[str, np.ndarray]]:
    """``feed`` as one feed per row along each input's axis in ``ins`` (views, not copies)."""
    n = next(v.shape[ins[k]] for k, v in feed.items())
    return [{k: v[(slice(None),) * ins[k] + (slice(i, i + 1),)] for k, v in feed.items()} for i in range(n)]
