"""Text -> token tensors with the tokenizer that travels in the package (HF ``tokenizers`` only).

The runtime never imports transformers: ``tokenizer.json`` holds the whole fast tokenizer
(normalizer, pre-tokenizer, vocabulary, post-processor with [CLS]/[SEP]), and ``tokenizers``
runs it. Each batch is padded to its longest item; longer texts are cut to the package's
``max_length`` with a :class:`TruncationWarning`.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .errors import InputError, PackageError

# Which encoding field feeds which model input (names as exported; see export/transformer.py).
_FIELDS = {"input_ids": "ids", "attention_mask": "attention_mask", "token_type_ids": "type_ids"}


class TruncationWarning(UserWarning):
    """A text was longer than the model's maximum length and was cut."""


def _which(index: int, total: int) -> str:
    """How an error names a text: "Text 2 of 3", or "The text" when there is only one."""
    return f"Text {index + 1} of {total}" if total > 1 else "The text"


def check_text(t: Any, index: int = 0, total: int = 1) -> str:
    """A non-empty string, or an InputError that says which text (``index`` of ``total``) is wrong."""
    where = _which(index, total)
    if not isinstance(t, str):
        kind = type(t).__name__
        article = "an" if kind[:1].lower() in "aeiou" else "a"
        hint = " (decode bytes first, e.g. data.decode('utf-8'))" if isinstance(t, (bytes, bytearray)) else ""
        raise InputError(f"{where} is {article} {kind} object, not a string; this model takes text{hint}.")
    if not t.strip():
        raise InputError(f"{where} is empty; give at least one non-space character.")
    try:
        t.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates: undecodable bytes from argv or a file read with errors="surrogateescape"
        raise InputError(f"{where} holds bytes that are not valid UTF-8; read the file with its real encoding.") from None
    return t


def check_texts(items: Sequence[Any]) -> list[str]:
    """Every item must be a non-empty string; the message names the first one that is not."""
    return [check_text(t, i, len(items)) for i, t in enumerate(items)]


class TextPreprocessor:
    """``batch(texts)`` -> the feed dict of the package's inputs (int64, padded to the longest)."""

    def __init__(self, tokenizer_file: Path, spec: dict, input_names: Sequence[str]):
        from tokenizers import Tokenizer

        try:
            tok = Tokenizer.from_file(str(tokenizer_file))
        except Exception as e:  # tokenizers raises a bare Exception on a malformed file
            raise PackageError(f"The tokenizer {tokenizer_file} cannot be read: {str(e).splitlines()[0][:200]}.") from None
        self.max_length = int(spec["max_length"])
        tok.enable_truncation(self.max_length)
        tok.enable_padding(pad_id=int(spec.get("pad_id", 0)), pad_token=spec.get("pad_token", "[PAD]"))
        self.tokenizer = tok
        unknown = [n for n in input_names if n not in _FIELDS]
        if unknown:
            raise PackageError(f"The text model has inputs {unknown} that the tokenizer cannot fill (it fills {list(_FIELDS)}).")
        self.input_names = list(input_names)

    def batch(self, items: Sequence[Any]) -> dict[str, np.ndarray]:
        texts = check_texts(items)
        encodings = self.tokenizer.encode_batch(texts)
        for i, e in enumerate(encodings):
            if not any(e.attention_mask):
                raise InputError(f"{_which(i, len(texts))} has no characters this model's tokenizer keeps ({texts[i][:40]!r}); "
                                 "give some words.")
        cut = [i for i, e in enumerate(encodings) if e.overflowing]
        if cut:
            first = texts[cut[0]]
            shown = first[:40] + ("..." if len(first) > 40 else "")
            warnings.warn(
                f"{len(cut)} text(s) longer than {self.max_length} tokens were truncated to {self.max_length} "
                f"(first: {shown!r}).",
                TruncationWarning,
                stacklevel=3,
            )
        return {
            name: np.asarray([getattr(e, _FIELDS[name]) for e in encodings], dtype=np.int64) for name in self.input_names
        }
