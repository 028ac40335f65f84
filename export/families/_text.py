"""What the two text families share: tokenizing validation texts with the package's own tokenizer."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Callable, Sequence

Tokenize = Callable[[Sequence[str]], dict]


def tokenizer(stage: Path, preprocess: dict, names: Sequence[str]) -> Tokenize:
    """The runtime's own tokenization (padding, truncation) from the staged ``tokenizer.json``."""
    from edgeai.text import TextPreprocessor

    return TextPreprocessor(stage / preprocess["tokenizer"], preprocess, names).batch


def batches(tokenize: Tokenize, texts: Sequence[str], sizes: Sequence[int]) -> list[dict]:
    """Consecutive padded batches of ``sizes`` texts each (the last may be short, none empty)."""
    out, start = [], 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # truncating the long test sentences is intended
        for size in sizes:
            if start >= len(texts):  # a small user dataset has a small test split
                break
            out.append(tokenize(texts[start : start + size]))
            start += size
    return out
