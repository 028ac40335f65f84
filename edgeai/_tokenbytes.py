"""The end of a finished generation: a character left unfinished by the last tokens, or bytes
the model made that are no character. Decoders give a replacement character for both; only the
first is left out of the final text (transformers' decode keeps the second, and so does edgeai).

The bytes are read from the tokens themselves where the tokenizer says what they are: GPT-2's
byte-level tokens (one character per byte, the table below) and byte-fallback tokens (``<0xE4>``,
Llama's). This is written here because ``tokenizers`` decodes bytes to text but has no call that
gives a token's bytes."""

from __future__ import annotations

import json
import re
from functools import lru_cache
from typing import Any, Callable

_BYTE_TOKEN = re.compile(r"<0x([0-9A-Fa-f]{2})>")


@lru_cache(maxsize=1)
def _byte_level() -> dict[str, int]:
    """GPT-2's byte-level alphabet, character -> byte: printable bytes are themselves, the other
    68 are shifted past 255 in byte order (the table every byte-level BPE tokenizer shares)."""
    printable = [*range(ord("!"), ord("~") + 1), *range(0xA1, 0xAC + 1), *range(0xAE, 0xFF + 1)]
    table = {chr(b): b for b in printable}
    table.update({chr(256 + i): b for i, b in enumerate(b for b in range(256) if b not in set(printable))})
    return table


def _kind(tokenizer: Any) -> str | None:
    decoder = getattr(tokenizer, "decoder", None)
    if decoder is None:
        return None
    state = json.loads(decoder.__getstate__())
    types = [state.get("type"), *(d.get("type") for d in state.get("decoders") or [])]
    return "bytelevel" if "ByteLevel" in types else "bytefallback" if "ByteFallback" in types else None


def _token_bytes(token: str, kind: str) -> bytes | None:
    if (m := _BYTE_TOKEN.fullmatch(token)) and kind == "bytefallback":
        return bytes([int(m.group(1), 16)])
    table = _byte_level()
    if kind == "bytelevel" and all(c in table for c in token):
        return bytes(table[c] for c in token)
    return None  # a token of text (sentencepiece's "▁the"): it ends on a whole character


def _unfinished(tail: bytes) -> int:
    """How many bytes at the end of ``tail`` are the start of a character still missing bytes: a
    lead byte and fewer continuation bytes than it announces; 0 if none."""
    i, cont = len(tail), 0
    while i and 0x80 <= tail[i - 1] <= 0xBF and cont < 3:
        i, cont = i - 1, cont + 1
    if not i:
        return 0
    lead = tail[i - 1]
    need = 2 if 0xC2 <= lead <= 0xDF else 3 if 0xE0 <= lead <= 0xEF else 4 if 0xF0 <= lead <= 0xF4 else 0
    return cont + 1 if cont + 1 < need else 0


def final_text(decode: Callable[[list[int]], str], tokenizer: Any, ids: list[int], text: str,
               fallback: Callable[[], str]) -> str:
    """``text`` (the decoding of ``ids``) without an unfinished last character, or ``fallback()``
    where the tokens' bytes cannot be read."""
    if not text.endswith("\ufffd"):
        return text
    kind = _kind(tokenizer)
    if kind is None:
        return fallback()
    tail = b""
    for i in reversed(ids[-3:]):  # an unfinished character is at most 3 bytes
        if (b := _token_bytes(tokenizer.id_to_token(i) or "", kind)) is None:
            break
        tail = b + tail
    n = _unfinished(tail)
    if not n:
        return text  # the model's own bytes: they stay
    # byte-level decoding (from_utf8_lossy) gives one replacement character for an unfinished
    # character; byte-fallback gives one per byte and hides the character before, so re-decode
    return text[:-1] if kind == "bytelevel" else decode(ids[:-n])


# transformers' clean_up_tokenization, in its order: a tokenizer that sets
# clean_up_tokenization_spaces decodes through it (PreTrainedTokenizerBase.clean_up_tokenization)
_CLEAN_UP = ((" .", "."), (" ?", "?"), (" !", "!"), (" ,", ","), (" ' ", "'"), (" n't", "n't"), (" 'm", "'m"),
             (" 's", "'s"), (" 've", "'ve"), (" 're", "'re"))
# a stream holds back this many characters: " n't" is decided by its last one, and a rule can make a
# match for a later one (" n ' t" -> " n't" -> "n't"): 3 let " n '" out too early (review; 0 of 200,000
# random token sequences differ at 4)
CLEAN_UP_HOLD = 4


def clean_up(text: str) -> str:
    for old, new in _CLEAN_UP:
        text = text.replace(old, new)
    return text


def settled(decode: Callable[[list[int]], str], ids: list[int], text: str | None = None, tokenizer: Any = None) -> str:
    """The decoding of ``ids`` (``text``, when known) without an unfinished last character: the
    bytes of one character may be split over tokens, and until its last byte comes the decoder
    gives replacement characters (one, or one per byte of the whole invalid run for byte-fallback
    tokenizers such as Llama's, which then also hides a complete character before it). So the
    text is that of the fewest tokens dropped from the end, at most 3 (a 4-byte character's first
    bytes), that decode without a trailing replacement character; where none do, the
    replacement characters are the model's own invalid bytes and stay (its streamed pieces may
    then differ from the final text in that last character).

    With the ``tokenizer`` of a byte-fallback decoder, the run of byte tokens at the end is left
    out whole: its decoder decodes a run at once and gives one replacement character per byte
    when any of it is invalid, so a character sent from a run (``<0x55>`` "U") turned into a
    replacement character when a later byte of the run was invalid, and the stream's pieces
    no longer joined into the text (review). A run is final once a token that is no byte ends it."""
    if (run := _open_run(tokenizer, ids)) and run < len(ids):
        return decode(ids[:-run])
    if run:
        return ""
    text = decode(ids) if text is None else text
    if not text.endswith("\ufffd"):
        return text
    for k in range(1, min(3, len(ids)) + 1):
        shorter = decode(ids[:-k])
        if not shorter.endswith("\ufffd"):
            return shorter
    return text


def _open_run(tokenizer: Any, ids: list[int]) -> int:
    """How many of the last ``ids`` are byte-fallback byte tokens (0 for other decoders)."""
    if tokenizer is None or not ids or _kind(tokenizer) != "bytefallback":
        return 0
    n = 0
    while n < len(ids) and _BYTE_TOKEN.fullmatch(tokenizer.id_to_token(ids[-1 - n]) or ""):
        n += 1
    return n


def space_before(decode: Callable[[list[int]], str], prev: int, token: int) -> str:
    """The whitespace that a decode of the new tokens alone drops before the first one, read from
    decoding it after the prompt's last token: a SentencePiece ``▁can`` (Llama, Mistral) decodes
    to "can" at the start of a text, so a continuation shown after its prompt would run into it
    ("Hello worldcan"). "" where nothing is dropped (GPT-2's " can" keeps its space)."""
    before, alone, both = decode([prev]), decode([token]), decode([prev, token])
    gap = both[len(before):] if both.startswith(before) else ""
    # a lone "▁" (Llama's " 2023" starts with one) decodes alone to "": its whole gap is the space
    lead = gap[: len(gap) - len(alone)] if gap.endswith(alone) else ""
    return lead if lead.isspace() else ""
