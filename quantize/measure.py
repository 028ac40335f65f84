"""Measurements recorded in the manifest: output agreement between variants, and CPU latency.

Latency is measured the way FACTS.md says it must be on a 2-core machine: each variant in its
own fresh process (no torch in it), alternating variants round by round so drift hits all alike,
the median of each process's median kept.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from edgeai.machine import machine_id
from edgeai.package import now


def compare(reference: dict[str, np.ndarray], other: dict[str, np.ndarray], task: str) -> dict[str, float]:
    """Max/mean abs difference per output; top-1 agreement for classifiers; cosine for embeddings."""
    figures: dict[str, float] = {}
    for name, ref in reference.items():
        diff = np.abs(ref.astype(np.float64) - other[name].astype(np.float64))
        figures["max_abs_diff"] = max(figures.get("max_abs_diff", 0.0), float(diff.max()))
        figures["mean_abs_diff"] = max(figures.get("mean_abs_diff", 0.0), float(diff.mean()))
    ref = next(iter(reference.values())).astype(np.float64)
    oth = other[next(iter(reference))].astype(np.float64)
    if task in ("image-classification", "text-classification"):
        figures["top1_agreement"] = float((ref.argmax(-1) == oth.argmax(-1)).mean())
    if task in ("text-embedding", "tensor"):
        cos = cosine(ref, oth)
        figures["cosine_min"] = float(cos.min())
        figures["cosine_mean"] = float(cos.mean())
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


def _time_one(model: Path, feed_file: Path, threads: int | None, runs: int) -> dict:
    cmd = [sys.executable, "-m", "edgeai.quantize._latency", str(model), str(feed_file), str(threads or 0), str(runs)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=False, env={**os.environ, "OMP_WAIT_POLICY": "PASSIVE"})
    if out.returncode != 0:
        raise RuntimeError(f"latency measurement of {model.name} failed: {out.stderr.strip()[-500:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def latencies(
    models: dict[str, Path], feed: dict[str, np.ndarray], threads: int | None = None, rounds: int = 3, runs: int = 40
) -> dict[str, dict]:
    """CPU latency of each model, each in its own process, alternating; batch of ``feed``."""
    feed_file = next(iter(models.values())).parent / f".latency-feed-{os.getpid()}.npz"
    np.savez(feed_file, **feed)
    per: dict[str, list[dict]] = {name: [] for name in models}
    try:
        for r in range(rounds):
            order = list(models) if r % 2 == 0 else list(reversed(models))
            for name in order:
                per[name].append(_time_one(models[name], feed_file, threads, runs))
    finally:
        feed_file.unlink(missing_ok=True)
    batch = next(iter(feed.values())).shape[0]
    result = {}
    for name, figs in per.items():
        result[name] = {
            "provider": "CPUExecutionProvider",
            "machine": machine_id(),
            "threads": figs[0]["threads"],
            "batch": int(batch),
            "p50_ms": round(float(np.median([f["p50_ms"] for f in figs])), 3),
            "p90_ms": round(float(np.median([f["p90_ms"] for f in figs])), 3),
            "runs": int(sum(f["runs"] for f in figs)),
            "measured": now(),
        }
    return result


def latency_key(entry: dict) -> str:
    return f"{entry['provider']}|{entry['machine']}|b{entry['batch']}"
