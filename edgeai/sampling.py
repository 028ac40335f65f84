"""Picking the next token from a step's logits, torch-free, as transformers' ``generate`` does:
the repetition penalty and the n-gram ban first, then temperature, top-k and top-p; greedy when the
temperature is 0.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Sequence

import numpy as np

from .errors import InputError, real, whole
from .postprocess import softmax


DEFAULT_TOP_K = 50  # transformers' GenerationConfig.top_k, which its generate samples with unless told otherwise


@dataclass
class Sampling:
    max_new_tokens: int = 64
    temperature: float = 0.0  # 0: greedy
    top_k: int | None = None
    top_p: float | None = None
    repetition_penalty: float | None = None  # None: the model's own (its generation_config), else 1.0
    seed: int | None = None
    stop: tuple[str, ...] = ()
    no_repeat_ngram_size: int = 0  # the model's generation_config (set by the Generator)

    def for_model(self, spec: dict) -> "Sampling":
        """These options with the checkpoint's generation_config defaults (the manifest's
        ``generation``): the repetition rules, which transformers' generate applies even when it
        decodes greedily, and, sampling, its ``top_k`` and ``top_p`` where not given (a package
        that records none: transformers' own default, top_k 50; review: the whole vocabulary's
        tail was sampled from, where transformers' generate never does)."""
        penalty = spec.get("repetition_penalty", 1.0) if self.repetition_penalty is None else self.repetition_penalty
        out = replace(self, repetition_penalty=penalty, no_repeat_ngram_size=int(spec.get("no_repeat_ngram_size", 0)))
        if self.temperature > 0:
            k = spec.get("top_k", DEFAULT_TOP_K) if self.top_k is None else self.top_k
            out = replace(out, top_k=k or None, top_p=spec.get("top_p") if self.top_p is None else self.top_p)  # top_k 0: none
        return out

    def check(self) -> None:
        """One InputError sentence for an option of the wrong type, out of range or that would be ignored."""
        import math

        whole("max_new_tokens", self.max_new_tokens, 1)
        if real("temperature", self.temperature) < 0 or math.isinf(self.temperature):
            raise InputError(f"temperature must be 0 (greedy) or a finite number above it; got {self.temperature}.")
        if self.top_k is not None:
            whole("top_k", self.top_k, 1)
        if self.top_p is not None and not 0 < real("top_p", self.top_p) <= 1:
            raise InputError(f"top_p must be in (0, 1]; got {self.top_p}.")
        if self.repetition_penalty is not None and not 0 < real("repetition_penalty", self.repetition_penalty) < math.inf:
            raise InputError(f"repetition_penalty must be positive; got {self.repetition_penalty}.")
        if self.seed is not None:
            whole("seed", self.seed, 0)
        if self.temperature == 0 and (given := [n for n in ("top_k", "top_p", "seed") if getattr(self, n) is not None]):
            raise InputError(f"{', '.join(given)} shape{'s' if len(given) == 1 else ''} sampling, and temperature 0 "
                             "decodes greedily: give a temperature above 0 (e.g. 0.7), or leave them out.")
        if not all(isinstance(x, str) and x for x in self.stop):
            raise InputError(f"stop takes non-empty strings; got {list(self.stop)!r}.")


def pick(logits: np.ndarray, seen: Sequence[int], s: Sampling, rng: np.random.Generator) -> int:
    """The next token from the last position's logits, as transformers' processors would pick it."""
    scores = logits.astype(np.float64)
    penalty = 1.0 if s.repetition_penalty is None else s.repetition_penalty
    if penalty != 1.0 and len(seen):
        idx = np.unique(np.asarray(seen, dtype=np.int64))
        vals = scores[idx]
        scores[idx] = np.where(vals < 0, vals * penalty, vals / penalty)
    if (n := s.no_repeat_ngram_size) and len(seen) + 1 >= n:
        # transformers' NoRepeatNGramLogitsProcessor: the token that would repeat an n-gram already seen is banned
        seq = list(seen)
        tail = seq[len(seq) - n + 1 :] if n > 1 else []
        banned = {seq[i + n - 1] for i in range(len(seq) - n + 1) if seq[i : i + n - 1] == tail}
        scores[list(banned)] = -np.inf
    if s.temperature == 0:
        return int(scores.argmax())
    finite = np.isfinite(scores)
    with np.errstate(over="ignore"):
        scaled = scores / s.temperature
    if np.isinf(scaled[finite]).any():  # a temperature so near 0 (1e-310) the logits overflow: its limit, greedy
        return int(scores.argmax())
    scores = scaled
    if s.top_k is not None and s.top_k < len(scores):
        kth = np.partition(scores, -s.top_k)[-s.top_k]
        scores = np.where(scores < kth, -np.inf, scores)
    if s.top_p is not None and s.top_p < 1.0:
        order = np.argsort(scores)  # ascending, as transformers' TopPLogitsWarper
        probs = softmax(scores[order])
        remove = np.cumsum(probs) <= (1 - s.top_p)
        remove[-1] = False  # keep at least the most likely token
        scores[order[remove]] = -np.inf
    probs = softmax(scores)
    return int(rng.choice(len(probs), p=probs))


