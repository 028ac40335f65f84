"""A byte-fallback decoder (Llama, Mistral) decodes a run of <0xNN> tokens at once: one invalid
byte in the run turns every byte of it, a whole character too, into a replacement character. A
stream must not send text from a run that a later byte of it can still change, or its pieces no
longer join into the final text (Pipeline.generate's stream=True contract)."""

from __future__ import annotations

from tokenizers import Tokenizer, decoders, models

from edgeai.generation import _Stream


def _fallback() -> Tokenizer:
    vocab = {"a": 0, "b": 1, "<0x55>": 2, "<0xB0>": 3, "<0xE4>": 4, "<0xB8>": 5, "<0xAD>": 6}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="a"))
    tok.decoder = decoders.Sequence([decoders.ByteFallback(), decoders.Fuse()])
    return tok


class _Gen:  # what _Stream reads of a Generator: its tokenizer and decode
    spec: dict = {}

    def __init__(self) -> None:
        self.tokenizer = _fallback()

    def decode(self, ids):
        return self.tokenizer.decode(list(ids), skip_special_tokens=True)


def _stream(ids: list[int]) -> tuple[list[str], str]:
    pieces: list[str] = []
    stream = _Stream(_Gen(), (), pieces.append)
    for i in range(1, len(ids) + 1):
        stream.add(ids[:i])
    return pieces, stream.finish(ids)


def test_a_byte_run_made_invalid_later_is_not_sent_before_it():
    # "a", byte 0x55 ("U", valid alone), byte 0xB0 (no character): the run decodes to two
    # replacement characters, as transformers' decode gives it; "U" must not have been sent
    pieces, text = _stream([0, 2, 3, 1])
    assert text == "a\ufffd\ufffdb"
    assert "".join(pieces) == text


def test_a_whole_character_of_a_run_is_sent_when_its_run_ends():
    pieces, text = _stream([0, 4, 5, 6, 4, 5, 6, 1])  # a 中 中 b
    assert text == "a中中b" and "".join(pieces) == text
    pieces, text = _stream([0, 4, 5, 6, 4, 3, 1])  # a 中, then an invalid run: the 中 is hidden by the decoder
    assert "".join(pieces) == text == "a" + "\ufffd" * 5 + "b"
