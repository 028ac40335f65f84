"""Text -> token tensors with the tokenizer that travels in the package (HF ``tokenizers`` only).

The runtime never imports transformers: ``tokenizer.json`` holds the whole fast tokenizer
(normalizer, pre-tokenizer, vocabulary, post-processor with [CLS]/[SEP]), and ``tokenizers``
runs it. Each chunk is padded to its longest item; longer texts are cut to the package's
``max_length`` with a :class:`TruncationWarning`.
"""

from __future__ import annotations

import contextlib
import threading
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from .errors import InputError, PackageError, a_type, warn_user
from .session import shape_of
from .text_inputs import TextArg, TextLine, UnreadFile  # lines read from files: what check_text names them by

# Which encoding field feeds which model input (names as exported; see export/transformer.py).
_FIELDS = {"input_ids": "ids", "attention_mask": "attention_mask", "token_type_ids": "type_ids"}


class TruncationWarning(UserWarning):
    """A text was longer than the model's maximum length and was cut; ``cut`` holds the
    positions of the cut texts in the batch that warned."""

    cut: tuple[int, ...] = ()


def _which(index: int, total: int) -> str:
    """How an error names a text: "Text 2 of 3", or "The text" when there is only one."""
    return f"Text {index + 1} of {total}" if total > 1 else "The text"


def _where(t: Any, index: int, total: int) -> str:
    """How an error names text ``t``: its file line, its place among the arguments, or _which."""
    return t.input if isinstance(t, TextLine) else t.where if isinstance(t, TextArg) else _which(index, total)


def check_text(t: Any, index: int = 0, total: int = 1) -> str:
    """A non-empty string, or an InputError that says which text (``index`` of ``total``, or the
    file line it came from) is wrong. A sentence pair ``{"text": a, "text_pair": b}`` (for
    models trained on pairs) gives the tuple ``(a, b)``, which the tokenizer encodes as a pair."""
    if isinstance(t, UnreadFile):
        raise InputError(t.error)
    where = _where(t, index, total)
    if isinstance(t, dict) and set(t) == {"text", "text_pair"}:  # a sentence pair, as transformers takes it
        return (check_text(t["text"], index, total), check_text(t["text_pair"], index, total))  # type: ignore[return-value]
    if isinstance(t, dict):  # a pair with other keys ("pair", "text_b"): not "a dict object, not a string"
        keys = ", ".join(repr(k) for k in list(t)[:4]) + (", ..." if len(t) > 4 else "")
        raise InputError(f"{where} is a dict with {'the keys ' + keys if t else 'no keys'}; a sentence pair is "
                         '{"text": first, "text_pair": second}, and any other text a string.')
    if not isinstance(t, str):
        hint = " (decode bytes first, e.g. data.decode('utf-8'))" if isinstance(t, (bytes, bytearray)) else ""
        raise InputError(f"{where} is {a_type(t)} object, not a string; this model takes text{hint}.")
    if not t.strip():
        raise InputError(f"{where} is empty; give at least one non-space character.")
    try:
        t.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates: undecodable bytes from argv or a file read with errors="surrogateescape"
        fix = "save the file as UTF-8" if isinstance(t, TextLine) else "decode its bytes with their real encoding"
        raise InputError(f"{where} holds bytes that are not valid UTF-8 (Latin-1 or Windows-1252 text, perhaps, or a lone "
                         f"surrogate); {fix}.") from None
    return t


def check_texts(items: Sequence[Any]) -> list[str]:
    """Every item must be a non-empty string; the message names the first one that is not."""
    return [check_text(t, i, len(items)) for i, t in enumerate(items)]


class TextPreprocessor:
    """``batch(texts)`` -> the feed dict of the package's inputs (int64, padded to the longest)."""

    def __init__(self, tokenizer_file: Path, spec: dict, input_names: Sequence[str], refuse_unknown: bool = False,
                 no_pairs: str | None = None):
        from tokenizers import Tokenizer

        try:
            tok = Tokenizer.from_file(str(tokenizer_file))
        except Exception as e:  # tokenizers raises a bare Exception on a malformed file
            raise PackageError(f"The tokenizer {tokenizer_file} cannot be read: {str(e).splitlines()[0][:200]}.") from None
        self.max_length = int(spec["max_length"])
        tok.enable_truncation(self.max_length)
        tok.no_padding()  # arrays() pads, per chunk: a list padded whole to its longest text took 585 MB of ids (review)
        self.pad_id = int(spec.get("pad_id", 0))
        self.tokenizer = tok
        unknown = [n for n in input_names if n not in _FIELDS]
        if unknown:
            raise PackageError(f"The text model has inputs {unknown} that the tokenizer cannot fill (it fills {list(_FIELDS)}).")
        self.input_names = list(input_names)
        unk = getattr(tok.model, "unk_token", None)
        # what the runtime refuses (a user's text); measurements keep every test sentence
        self.unk_id = tok.token_to_id(unk) if unk and refuse_unknown else None
        # Why a sentence pair means nothing to this model (None: it takes pairs). A tokenizer without a
        # post-processor has no [SEP] or segment ids to mark the second text: the pair was read as the
        # two texts run together, a silent wrong answer (review)
        if no_pairs is None and tok.post_processor is None:
            no_pairs = "this model's tokenizer has no way to mark where a second text begins (it was made for single texts)"
        self.no_pairs = no_pairs

    def batch(self, items: Sequence[Any]) -> dict[str, np.ndarray]:
        """The feed of ``items``, padded to the longest of them."""
        return self.arrays(self.encode(items))

    def arrays(self, encodings: Sequence[Any], width: int | None = None) -> dict[str, np.ndarray]:
        """The input arrays of ``encodings`` (from :meth:`encode`), right-padded to ``width`` (their longest)."""
        width = max(len(e.ids) for e in encodings) if width is None else width
        out = {}
        for name in self.input_names:
            field = _FIELDS[name]
            arr = np.full((len(encodings), width), self.pad_id if name == "input_ids" else 0, dtype=np.int64)
            for row, e in zip(arr, encodings):
                values = getattr(e, field)[:width]
                row[: len(values)] = values
            out[name] = arr
        return out

    def encode(self, items: Sequence[Any]) -> list[Any]:
        """``items`` checked and tokenized (``tokenizers`` Encodings, unpadded), a cut text warned of."""
        texts = check_texts(items)
        if self.no_pairs and (pair := next((i for i, t in enumerate(texts) if isinstance(t, tuple)), None)) is not None:
            raise InputError(f"{_where(items[pair], pair, len(texts))} is a sentence pair, but {self.no_pairs}; give one string.")
        encodings = encode_batch(self.tokenizer, texts, self.max_length)
        for i, e in enumerate(encodings):
            if not any(m and not special for m, special in zip(e.attention_mask, e.special_tokens_mask)):  # [CLS] [SEP] alone
                raise InputError(f"{_where(items[i], i, len(texts))} has no characters this model's tokenizer keeps ({texts[i][:40]!r}); "
                                 "give some words.")
            if self.unk_id is not None and _all_unknown(e, self.unk_id):
                # every such text reads the same to the model ([CLS] [UNK] ... [SEP]): its answer
                # would be a confident guess, the same for Japanese, an emoji or a typo
                where = _where(items[i], i, len(texts))
                raise InputError(f"{where} has no word this model's vocabulary knows ({texts[i][:40]!r}: "
                                 "every token is unknown), so any answer would be a guess; give text in the language it was trained on.")
        cut = [i for i, e in enumerate(encodings) if e.overflowing]
        if cut:
            if (log := getattr(_LOCAL, "cuts", None)) is not None:
                log.append(tuple(cut))
            if not getattr(_LOCAL, "quiet", False):
                warn_user(truncation_warning(cut, texts[cut[0]], self.max_length))
        return encodings


# A text longer than this many characters per token kept is tokenized from its head first:
# ``tokenizers`` tokenizes a text whole before truncating it (10^6 words took 30 s to keep 256 tokens; review).
_HEAD_CHARS_PER_TOKEN = 32


def encode_batch(tokenizer: Any, texts: Sequence[Any], max_length: int) -> list[Any]:
    """``tokenizer.encode_batch(texts)`` (truncating at ``max_length``), with each very long single text
    tokenized from a head of it, cut at a space, that already overflows ``max_length`` tokens, and whose
    kept tokens all end before that space: the words before a space are tokenized alike with or without
    what follows it, so the kept tokens, their offsets and the cut are the whole text's. A head that
    does not overflow is made four times longer until one does or the text is whole. Written here because
    ``tokenizers`` has no option to stop reading once the truncation length is reached."""
    limit = max(4096, _HEAD_CHARS_PER_TOKEN * max_length)
    long = [i for i, t in enumerate(texts) if isinstance(t, str) and len(t) > limit]
    if not long or tokenizer.pre_tokenizer is None:  # no pre-tokenizer: the text is one word, read whole
        return tokenizer.encode_batch(texts)
    heads = {i: _head_encoding(tokenizer, texts[i], limit) for i in long}
    whole = iter(tokenizer.encode_batch([t for i, t in enumerate(texts) if i not in heads]) if len(heads) < len(texts) else [])
    return [heads[i] if i in heads else next(whole) for i in range(len(texts))]


def _head_encoding(tokenizer: Any, t: str, limit: int) -> Any:
    while limit < len(t):
        cut = max(t.rfind(" ", 0, limit), t.rfind("\n", 0, limit))
        if cut <= 0 or not _splits_at(tokenizer, t, cut):
            cut = t.rfind(" ", 0, limit)  # Metaspace splits at spaces, not at newlines
        if cut > 0 and _splits_at(tokenizer, t, cut):
            head = t[:cut].rstrip()
            e = tokenizer.encode(head)
            ends = [end for (_, end), special in zip(e.offsets, e.special_tokens_mask) if not special]
            if e.overflowing and ends and max(ends) <= max(head.rfind(" "), head.rfind("\n")):  # the head's last word not kept
                return e
        limit *= 4
    return tokenizer.encode(t)


def _splits_at(tokenizer: Any, t: str, cut: int) -> bool:
    """Whether the tokenizer's pre-tokenizer (after its normalizer) ends a word at the space ``t[cut]``: one that
    does not (Metaspace with split=False, a Split on other characters) hands the model a word across it, whose
    tokens may depend on what follows (a Unigram's best path: review)."""
    from tokenizers import PreTokenizedString

    start = max(0, cut - 64)
    window, at = PreTokenizedString(t[start : cut + 64]), cut - start
    if tokenizer.normalizer is not None:
        window.normalize(tokenizer.normalizer.normalize)
    tokenizer.pre_tokenizer.pre_tokenize(window)
    return not any(a < at and b > at + 1 for _, (a, b), _ in window.get_splits(offset_referential="original", offset_type="char"))


def truncation_warning(cut: Sequence[int], first: Any, max_length: int) -> TruncationWarning:
    """The one warning of a batch whose texts at ``cut`` were truncated (``first``: the first of them)."""
    first = tuple(first.values()) if isinstance(first, dict) else first  # a sentence pair, as given or checked
    first = " / ".join(first) if isinstance(first, tuple) else str(first)
    shown = first[:40] + ("..." if len(first) > 40 else "")
    warning = TruncationWarning(f"{len(cut)} text(s) longer than {max_length} tokens were truncated to {max_length} (first: {shown!r}).")
    warning.cut = tuple(cut)
    return warning


# This thread's record of the texts cut (recording_cuts) and whether a cut is warned of: not
# warnings.catch_warnings, which swaps the whole process's warning machinery under every thread (review).
_LOCAL = threading.local()


@contextlib.contextmanager
def recording_cuts(quiet: bool = False):
    """Collect, on this thread only, the ``cut`` positions of each batch tokenized in the block
    (a list of tuples); ``quiet``: without their TruncationWarning."""
    saved = getattr(_LOCAL, "cuts", None), getattr(_LOCAL, "quiet", False)
    _LOCAL.cuts, _LOCAL.quiet = [], quiet or saved[1]
    try:
        yield _LOCAL.cuts
    finally:
        _LOCAL.cuts, _LOCAL.quiet = saved


def refused_texts(tokenize: Callable[[list], Any], texts: Sequence[Any]) -> dict[int, str]:
    """Which texts ``tokenize`` refuses on their own (index -> its sentence), its warnings held
    back: what a batch that raised is split by, so that the rest still run as one batch."""
    refused = {}
    with recording_cuts(quiet=True):  # the batch of the rest warns once
        for i, t in enumerate(texts):
            try:
                tokenize([t])
            except InputError as e:
                refused[i] = str(e)
    return refused


def _all_unknown(e, unk_id: int) -> bool:
    """Whether every real token (not padding, not [CLS]/[SEP]) of an encoding is the unknown one."""
    real = [t for t, special, m in zip(e.ids, e.special_tokens_mask, e.attention_mask) if m and not special]
    return bool(real) and all(t == unk_id for t in real)


# Texts run in chunks of this many, grouped by length so little padding is computed; one batch
# of thousands of texts padded to the longest would need gigabytes for attention scores.
TEXT_CHUNK = 32


def one_text_per_call(variant: dict) -> bool:
    """Whether a variant (its manifest entry) runs texts one per call: dynamic INT8 picks its activation
    scales per call, padding included, so batched a text's result would depend on the texts beside it."""
    return variant.get("recipe", {}).get("method") == "dynamic"


def run_in_chunks(run, feed: dict[str, np.ndarray], size: int = TEXT_CHUNK) -> dict[str, np.ndarray]:
    """Run a tokenized batch in length-sorted chunks of ``size``, each cut to its own longest text."""
    n = next(iter(feed.values())).shape[0]
    mask = feed.get("attention_mask")
    if n <= size and (mask is None or not mask.size or mask[:, -1].any()):
        return run(feed)  # one chunk already as wide as its longest text (a frame loop's single text): nothing to cut
    lengths = mask.sum(1) if mask is not None else None
    return _run_sorted(run, n, lengths, lambda idx, width: {k: v[idx, :width] for k, v in feed.items()}, size)


def run_encoded(run, pre: TextPreprocessor, encodings: Sequence[Any], size: int = TEXT_CHUNK) -> dict[str, np.ndarray]:
    """Run :meth:`TextPreprocessor.encode`'s encodings in length-sorted chunks of ``size``, each padded
    only to its own longest text: no array of the whole list padded to its longest is ever made."""
    if len(encodings) <= size:
        return run(pre.arrays(encodings))
    lengths = np.asarray([len(e.ids) for e in encodings])
    return _run_sorted(run, len(encodings), lengths, lambda idx, width: pre.arrays([encodings[i] for i in idx], width), size)


def _run_sorted(run, n: int, lengths: np.ndarray | None, feed_of: Callable, size: int) -> dict[str, np.ndarray]:
    """``run`` on ``feed_of(rows, width)`` for chunks of ``size`` rows of similar ``lengths``; outputs in row order."""
    from .data.compare import stack

    if n <= size:
        return run(feed_of(np.arange(n), int(lengths.max()) if lengths is not None else None))
    order = np.argsort(lengths, kind="stable") if lengths is not None else np.arange(n)
    parts: dict[str, list[np.ndarray]] = {}
    for start in range(0, n, size):
        idx = order[start : start + size]
        for k, v in run(feed_of(idx, int(lengths[idx].max()) if lengths is not None else None)).items():
            parts.setdefault(k, []).append(v)
    inverse = np.empty_like(order)
    inverse[order] = np.arange(n)
    return {k: stack(v)[inverse] for k, v in parts.items()}  # per-token outputs: padded to the longest chunk


def check_positions(feed: Any, manifest: dict) -> None:
    """Ready tensors longer than a text model's position table (preprocess ``positions``) are refused
    in one sentence, where ONNX Runtime would fail inside the graph; other keys are check_feed's."""
    pre = manifest.get("preprocess", {})
    if not (positions := pre.get("positions")) or not isinstance(feed, Mapping):
        return
    for spec in manifest["inputs"]:
        shape = shape_of(feed.get(spec["name"]))
        if shape is not None and len(shape) == 2 == len(spec["shape"]) and isinstance(spec["shape"][1], str) and shape[1] > positions:
            also = f"; predict() cuts texts to {pre['max_length']}" if pre.get("max_length", positions) < positions else ""
            raise InputError(f"Input {spec['name']!r} has {shape[1]} tokens on its sequence axis; this model takes at most "
                             f"{positions} (its position table){also}.")


def numpy_texts(x: Any) -> Any:
    """A numpy array of strings as Python's (0-d: a text; 1-d: a list): a 0-d one was a TypeError (review).
    A 1-d object array (pandas' ``df["text"].to_numpy()``), a pandas Series and Index are lists of texts too,
    as embed() already read them."""
    if isinstance(x, np.ndarray) and (x.dtype.kind in "US" or (x.dtype.kind == "O" and x.ndim == 1)):
        return x.tolist()
    if type(x).__name__ in ("Series", "Index") and type(x).__module__.startswith("pandas"):  # an Index: df.index, df.columns
        return x.tolist()
    if type(x).__name__ == "DataFrame" and type(x).__module__.startswith("pandas"):
        # iterating a DataFrame gives its column names: embed(df) embedded the header alone, silently (review)
        cols = ", ".join(repr(c) for c in list(x.columns)[:4]) + (", ..." if len(x.columns) > 4 else "")
        raise InputError(f"Got a pandas DataFrame (columns {cols or 'none'}); pass the column of texts, "
                         "e.g. df[\"text\"], not the whole table.")
    return x
