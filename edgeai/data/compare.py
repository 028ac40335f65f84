"""Output agreement: between variants (recorded in the manifest), and between ONNX and PyTorch
at export time. Latency is edgeai.bench's."""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from edgeai.errors import ExportError

# The figure each task's budget is judged by (a variant's ``accuracy`` holds it).
# text-generation: next-token agreement at every position of the held-out texts
CLASSIFICATION_TASKS = ("image-classification", "text-classification", "token-classification", "text-generation",
                        "text2text-generation")


# z of a two-sided 95% interval.
Z95 = 1.959963984540054


def compare(reference: dict[str, np.ndarray], other: dict[str, np.ndarray], task: str,
            labels: list[str] | None = None, targets: list[np.ndarray] | None = None) -> dict[str, Any]:
    """Max/mean abs difference per output; top-1 agreement for classifiers; row cosine for every
    other task (integer outputs: exact agreement, :func:`score`); ``samples`` (rows compared) and
    a 95% interval beside each agreement figure. For
    token classification with ``labels``, also ``entity_f1``: the entities (B-/I- runs of one
    type, as the runtime groups them) found in ``other`` scored against those of ``reference``.
    For generation with ``targets`` (each text's next tokens), also the perplexities."""
    figures: dict[str, Any] = {}
    for diffs in per_output(reference, other).values():
        figures["max_abs_diff"] = max(figures.get("max_abs_diff", 0.0), diffs["max_abs_diff"])
        figures["mean_abs_diff"] = max(figures.get("mean_abs_diff", 0.0), diffs["mean_abs_diff"])
    first = next(iter(reference))
    if task in CLASSIFICATION_TASKS:
        ref, oth = reference[first], other[first]
        real = ~np.isnan(ref).any(-1)  # token outputs: the padding of shorter batches (stack) is NaN
        eq = _decision(ref) == _decision(oth)
        same = eq[real]
        figures["top1_agreement"] = float(same.mean())
        figures["top1_agreement_ci95"] = wilson_interval(int(same.sum()), same.size)
        if ref.ndim == 3:  # tokens or positions of one text flip together: the text is the sample
            figures["top1_agreement_ci95"] = _wider(figures["top1_agreement_ci95"],
                                                    clustered_interval((eq & real).sum(1), real.sum(1)))
        figures["samples"] = float(same.size)
        if task == "token-classification" and labels:
            figures["entity_f1"] = entity_f1(np.nan_to_num(ref).argmax(-1), np.nan_to_num(oth).argmax(-1), real, labels)
        if targets is not None:
            figures.update(perplexities(ref, oth, targets))
    else:  # embeddings, tensors, and any task a plugin family adds: each output on its own
        # Each output is scored alone and each sample keeps its worst output: joined into one row,
        # a large-scale output (logits ~50) hid a small one gone to noise (boxes in [0, 1]; review).
        n = len(reference[first]) if reference[first].ndim else 1
        outputs = [k for k, v in reference.items() if v.ndim and len(v) == n] or [first]
        cos = np.min(np.broadcast_arrays(*[score(reference[k], other[k]) for k in outputs]), axis=0)
        figures["cosine_min"] = float(cos.min())
        figures["cosine_mean"] = float(cos.mean())
        if len(cos) > 1:  # one-value outputs give one cosine across the inputs: no interval to draw
            figures["cosine_mean_ci95"] = mean_interval(cos, bounds=(-1.0, 1.0))
        figures["closeness"] = min(closeness(reference[k], other[k]) if _is_float(reference[k]) else
                                   _equal_share(reference[k], other[k]) for k in outputs)
        figures["samples"] = float(n)  # the inputs compared, also where an output is one value each
    return figures


def _decision(logits: np.ndarray) -> np.ndarray:
    """The class each row is given: its top logit, or for a single logit (a reranker, a binary
    head read through sigmoid) which side of 0 it is on -- the top of one logit never changes."""
    x = np.nan_to_num(logits)
    return x[..., 0] > 0 if x.shape[-1] == 1 else x.argmax(-1)


def perplexities(reference: np.ndarray, other: np.ndarray, targets: list[np.ndarray]) -> dict[str, float]:
    """Perplexity of the texts' real next tokens under both logits (texts x positions x vocabulary;
    ``targets[i][j]`` follows position j of text i), and ``perplexity_kept``, the reference's over
    the other's: 1.0 is no change, 0.95 a perplexity about 5% higher."""
    def mean_nll(logits: np.ndarray) -> float:
        total, count = 0.0, 0
        for row, t in enumerate(targets):
            x = logits[row, : len(t)].astype(np.float64)
            top = x.max(-1)
            log_z = top + np.log(np.exp(x - top[:, None]).sum(-1))
            total += float((log_z - x[np.arange(len(t)), t]).sum())
            count += len(t)
        return total / max(count, 1)

    ref, got = float(np.exp(mean_nll(reference))), float(np.exp(mean_nll(other)))
    return {"perplexity": got, "perplexity_fp32": ref, "perplexity_kept": ref / got}


def bio_tag(label: str) -> tuple[str, str]:
    """``("B", "PER")`` for ``B-PER``; a label without a B-/I- prefix continues ("I"): how both
    the token-classification output and its agreement figure read an entity label."""
    if label.startswith(("B-", "I-")):
        return label[0], label[2:]
    return "I", label


def entity_f1(ref: np.ndarray, got: np.ndarray, real: np.ndarray, labels: list[str]) -> float:
    """F1 of the entity spans of ``got`` against ``reference``'s (label ids per token, ``real``
    marking the tokens that are not padding); 1.0 when neither has any entity."""
    def spans(ids: np.ndarray) -> set[tuple[int, int, int, str]]:
        out: set = set()
        for row in range(ids.shape[0]):
            start, kind = None, None
            names = [labels[i] if i < len(labels) else "O" for i in ids[row][real[row]]]
            for pos, name in enumerate([*names, "O"]):
                bi, tag = bio_tag(name)
                if kind is not None and (bi == "B" or tag != kind):
                    if kind != "O":
                        out.add((row, start, pos, kind))
                    kind = None
                if kind is None:
                    start, kind = pos, tag
        return out

    a, b = spans(ref), spans(got)
    return 1.0 if not a and not b else 2 * len(a & b) / (len(a) + len(b))


def wilson_interval(successes: int, n: int, z: float = Z95) -> list[float]:
    """The Wilson score interval of a proportion (95% by default): unlike the normal one it stays
    inside [0, 1] and is not zero-width at 0/n or n/n, where agreement figures usually sit."""
    if n <= 0:
        return [0.0, 1.0]
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    # p lies inside by construction; said so exactly (at n/n, rounding left the top at 0.9999999999999998)
    return [max(0.0, min(p, float(centre - half))), min(1.0, max(p, float(centre + half)))]


def clustered_interval(successes: np.ndarray, counts: np.ndarray, z: float = Z95) -> list[float]:
    """The 95% interval of a proportion pooled over clusters (texts: ``successes[i]`` of
    ``counts[i]`` tokens agree), by the ratio estimator's cluster-robust variance. The tokens of
    one text are not independent samples -- one changed word moves its neighbours' labels -- so a
    Wilson interval over tokens is too narrow; this one counts the texts."""
    k, m = np.asarray(successes, np.float64), np.asarray(counts, np.float64)
    k, m = k[m > 0], m[m > 0]
    if len(m) < 2:
        return [0.0, 1.0]
    p = k.sum() / m.sum()
    half = z * np.sqrt(((k - p * m) ** 2).sum() / (len(m) * (len(m) - 1))) / m.mean()
    return [max(0.0, float(p - half)), min(1.0, float(p + half))]


def _wider(a: list[float], b: list[float]) -> list[float]:
    return [min(a[0], b[0]), max(a[1], b[1])]


def mean_interval(values: np.ndarray, z: float = Z95, bounds: tuple[float, float] = (-np.inf, np.inf)) -> list[float]:
    """The normal-approximation interval of a mean (95% by default): mean +- z * s / sqrt(n),
    clipped to ``bounds``; a single value gives a zero-width interval."""
    v = np.asarray(values, dtype=np.float64).ravel()
    mean = float(v.mean())
    half = z * float(v.std(ddof=1)) / np.sqrt(len(v)) if len(v) > 1 else 0.0
    return [float(max(bounds[0], mean - half)), float(min(bounds[1], mean + half))]


def per_output(reference: dict[str, np.ndarray], other: dict[str, np.ndarray]) -> dict[str, dict[str, float]]:
    """Max and mean absolute difference of each output (``compare`` keeps the worst of them)."""
    figures = {}
    for name, ref in reference.items():
        ref64, oth64 = ref.astype(np.float64), other[name].astype(np.float64)
        diff = np.abs(ref64 - oth64)
        diff[~np.isfinite(diff)] = np.inf  # a NaN in either output is an infinite difference, never a pass
        diff[np.isnan(ref64) & np.isnan(oth64)] = 0.0  # ...except where stack() padded both
        empty = not diff.size  # an output with no values ((n, 0)) differs in none
        figures[name] = {"max_abs_diff": 0.0 if empty else float(diff.max()), "mean_abs_diff": 0.0 if empty else float(diff.mean())}
    return figures


def _equal_share(a: np.ndarray, b: np.ndarray) -> float:
    """An integer output's closeness: the share of its values that are equal, :func:`stack`'s
    padding (on both sides) left out."""
    real = ~((a == pad_value(a.dtype)) & (b == pad_value(a.dtype))) if a.dtype.kind in "iu" else np.ones(a.shape, bool)
    return float((a == b)[real].mean()) if real.any() else 1.0


def _is_float(a: np.ndarray) -> bool:
    return np.issubdtype(a.dtype, np.floating)


def score(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per sample: the cosine of a float output; for an integer or boolean one (class ids from an
    argmax, counts, masks) 1 where every value is equal, else 0. A cosine of ids calls ids all
    off by one 0.9998, within any budget (review: an argmax head passed with 1% of ids changed)."""
    if _is_float(a):
        return cosine(a, b)
    width = int(np.prod(a.shape[1:]))  # reshape(n, -1) fails on an empty output
    return (a.reshape(len(a), width) == b.reshape(len(b), width)).all(1).astype(np.float64)


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine similarity. Rows that are zero on both sides agree (1: a ReLU head that
    outputs nothing for an input, unchanged); rows of one value (a scalar per input) would be
    +-1 whatever the values, so such an output is compared as one vector across the inputs.
    Positions NaN on both sides are the padding of :func:`stack` (inputs of different lengths)
    and count as zero; a row with a NaN on one side only is -1, the worst, never a pass."""
    width = int(np.prod(a.shape[1:]))  # reshape(n, -1) fails on an empty output; its rows agree (zero on both sides)
    a = a.astype(np.float64).reshape(len(a), width)  # float16 outputs overflowed their norms (review)
    b = b.astype(np.float64).reshape(len(b), width)
    if a.shape[1] == 1:
        a, b = a.T, b.T
    pad = np.isnan(a) & np.isnan(b)
    a, b = np.where(pad, 0.0, a), np.where(pad, 0.0, b)
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    both_zero = ~a.any(1) & ~b.any(1)
    with np.errstate(invalid="ignore"):
        cos = np.where(both_zero, 1.0, (a * b).sum(1) / np.maximum(norms, 1e-12))
    return np.clip(np.where(np.isnan(cos), -1.0, cos), -1.0, 1.0)  # float rounding gave 1.0000000000000002


def closeness(reference: np.ndarray, other: np.ndarray) -> float:
    """``1 - |other - reference| / |reference|`` over all of one output's values (Euclidean norms:
    one minus the relative RMS error), at least 0. What cosine cannot see, a change of scale:
    int8 outputs 5% too large have cosine 1 and closeness 0.95. Taken over the whole output, not
    per sample, so that a sample whose output is near zero (a tanh or ReLU head) does not score
    its rounding as a 100% error; cosine_min keeps the per-sample view. NaN on both sides is
    :func:`stack`'s padding and left out; a NaN on one side scores 0; zeros on both sides 1."""
    a, b = reference.astype(np.float64).ravel(), other.astype(np.float64).ravel()
    pad = np.isnan(a) & np.isnan(b)
    a, b = a[~pad], b[~pad]
    if not a.any() and not b.any():
        return 1.0
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        rel = np.linalg.norm(b - a) / np.linalg.norm(a)
    return 0.0 if np.isnan(rel) else float(np.clip(1.0 - rel, 0.0, 1.0))


def run_batches(session_run, feeds: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    outs: dict[str, list[np.ndarray]] = {}
    for feed in feeds:
        for k, v in session_run(feed).items():
            outs.setdefault(k, []).append(v)
    return {k: stack(v) for k, v in outs.items()}


def stack(arrays: list[np.ndarray]) -> np.ndarray:
    """Batches joined on the batch axis. Per-token outputs of text batches padded to different
    lengths are padded to the longest with :func:`pad_value`: NaN for float outputs, for integer
    ones (token ids, tags; booleans as int8) the type's far end, which ``compare`` leaves out
    where both sides hold it (padding), and counts as a difference where one side does."""
    if arrays[0].ndim == 0:  # a scalar per run (a model returning x.sum()): one value each
        return np.stack(arrays)
    if len({a.shape[1:] for a in arrays}) <= 1 or len({(a.dtype, a.ndim) for a in arrays}) > 1 or arrays[0].dtype.kind not in "fiub":
        return np.concatenate(arrays)
    if arrays[0].dtype.kind == "b":
        arrays = [a.astype(np.int8) for a in arrays]
    full = tuple(max(a.shape[i] for a in arrays) for i in range(1, arrays[0].ndim))
    out = np.full((sum(len(a) for a in arrays), *full), pad_value(arrays[0].dtype), dtype=arrays[0].dtype)
    start = 0
    for a in arrays:
        out[(slice(start, start + len(a)), *(slice(0, d) for d in a.shape[1:]))] = a
        start += len(a)
    return out


def pad_value(dtype: np.dtype) -> float | int:
    """What :func:`stack` fills the positions an input of a shorter batch lacks with."""
    if np.issubdtype(dtype, np.floating):
        return np.nan
    info = np.iinfo(dtype)
    return info.min if info.min < 0 else info.max


def budget_met(budget: Mapping | None, accuracy: Mapping) -> bool:
    """The one budget rule: ``accuracy[metric] >= min``, and every further minimum in ``also``
    (e.g. an embedding's mean cosine). No budget: anything goes; a missing figure: not met."""
    return not missed_floors(budget, accuracy)


def budget_rule(budget: Mapping) -> str:
    """Every floor of ``budget``, its metric first: "entity_f1 >= 0.98 and top1_agreement >= 0.99"."""
    floors = {budget["metric"]: budget["min"], **budget.get("also", {})}
    return " and ".join(f"{k} >= {v:.10g}" for k, v in floors.items())  # 0.9999999, not 1


def missed_floors(budget: Mapping | None, accuracy: Mapping) -> dict[str, float]:
    """The minimums of ``budget`` (its metric first, then ``also``) that ``accuracy`` falls short
    of or lacks, with their values; empty when the budget is met (or there is none)."""
    if not budget:
        return {}
    floors = {budget["metric"]: budget["min"], **budget.get("also", {})}
    return {k: v for k, v in floors.items() if accuracy.get(k) is None or not accuracy[k] >= v}


def short_of(value: float, floor: float) -> str:
    """``value`` with the decimals that show it under ``floor``: 0.99999 under 0.9999999 is not "1.0000" (review)."""
    digits = 4
    while digits < 10 and round(value, digits) >= floor:
        digits += 1
    return f"{value:.{digits}f}"


def closeness_floor(cosine_min: float) -> float:
    """The closeness that goes with a lowest cosine: the relative difference that cosine already
    allows in direction, ``1 - sqrt(2 (1 - cosine))`` (0.999: 0.955), so that a budget on one
    does not forbid what the other allows, and ``--budget`` moves both."""
    # down to 3 places, never up: --budget 0.9999999 rounded to a closeness of 1, a demand no int8 meets
    return float(np.floor((1.0 - float(np.sqrt(2.0 * (1.0 - cosine_min)))) * 1000 + 1e-9) / 1000)


def with_budget(budget: Mapping, minimum: float | None) -> dict:
    """``budget`` with the user's threshold for its metric (``--budget``), checked: agreement and
    cosine figures live in (0, 1], and a cosine budget of 1 is refused. A closeness floor beside a
    lowest-cosine metric follows it (:func:`closeness_floor`); other floors stay."""
    budget = dict(budget)
    if minimum is None:
        return budget
    from numbers import Real

    from edgeai.errors import InputError

    if isinstance(minimum, bool) or not isinstance(minimum, Real) or not 0 < minimum <= 1:  # budget="0.99": a TypeError (review)
        raise InputError(f"--budget is a threshold for {budget['metric']}, above 0 and at most 1; "
                         f"got {minimum if isinstance(minimum, Real) else repr(minimum)}.")
    if minimum == 1 and budget["metric"].startswith("cosine"):
        # Agreement of 1 is a real demand (the same answer on every input); a cosine of exactly 1
        # is met by no lossy variant, not even the fused float graph (0.9999999999).
        raise InputError(f"--budget 1 for {budget['metric']} allows no difference at all, which no variant but fp32 "
                         "meets; give a threshold below 1, e.g. 0.999.")
    if "closeness" in budget.get("also", {}) and budget["metric"] == "cosine_min":  # the scale floor follows
        floor, rest = closeness_floor(float(minimum)), {k: v for k, v in budget["also"].items() if k != "closeness"}
        budget["also"] = {**rest, "closeness": floor} if floor > 0 else rest  # a cosine of 0.5 or less: no floor
    return {**budget, "min": float(minimum), "set_by": "user"}


def check_close(ref: list[np.ndarray], got: list[np.ndarray], what: str, tolerance: float) -> float:
    """Worst element-wise ``|got - ref| / (1 + |ref|)``; an ExportError past ``tolerance`` or on a shape mismatch."""
    worst = 0.0
    for r, g in zip(ref, got):
        if r.shape != g.shape:
            raise ExportError(f"The ONNX export gives shape {list(g.shape)} where PyTorch gives {list(r.shape)} {what}; "
                              "a size was probably frozen during export (mark it with --dynamic, or avoid shape-dependent code).")
        if r.size:
            r64 = r.astype(np.float64)
            g64 = g.astype(np.float64)
            with np.errstate(invalid="ignore", over="ignore"):
                rel = np.abs(r64 - g64) / (1 + np.abs(r64))
            same = (np.isnan(r64) & np.isnan(g64)) | (np.isinf(r64) & (r64 == g64))  # NaN where PyTorch has NaN agrees
            worst = max(worst, float(np.where(same, 0.0, np.where(np.isfinite(rel), rel, np.inf)).max()))
    if worst > tolerance:
        raise ExportError(f"The ONNX export differs from PyTorch by {worst:.2e} (relative) {what}; tolerance {tolerance:.0e}.")
    return worst
