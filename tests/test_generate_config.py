"""What transformers' ``generate`` takes from a checkpoint besides its weights: the generation
config's repetition penalty and n-gram ban (applied even greedy) and the ``tools``/``documents``
a chat template tests for (test_generate.py: the forced EOS at max_new_tokens 1). A review found each ignored:
the greedy text differed from transformers' on the same checkpoint.
"""

from __future__ import annotations

import pytest

pytest.importorskip("optimum.exporters.onnx")
torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from test_generate import _final, _prompts, _tokenizer  # noqa: E402

import edgeai  # noqa: E402
from edgeai.errors import EdgeAIWarning  # noqa: E402
from edgeai.generation import _Stream, generator_for  # noqa: E402


def test_the_generation_configs_penalty_and_ngram_ban_apply_as_in_transformers(tmp_path):
    from transformers import GenerationConfig, GPT2Config, GPT2LMHeadModel

    from edgeai.export import export_model

    tok = _tokenizer()
    torch.manual_seed(3)
    model = GPT2LMHeadModel(GPT2Config(n_embd=32, n_layer=2, n_head=2, n_positions=128, vocab_size=len(tok),
                                       eos_token_id=0, bos_token_id=0, pad_token_id=0)).eval()
    model.generation_config = GenerationConfig(eos_token_id=0, bos_token_id=0, pad_token_id=0, repetition_penalty=1.3,
                                               no_repeat_ngram_size=2, num_beams=2, do_sample=True, top_k=1, top_p=0.9)
    model.save_pretrained(tmp_path / "ck")
    tok.clean_up_tokenization_spaces = True  # as transformers 4.3x-4.44 saved tokenizers: decode joins " ." back
    tok.save_pretrained(tmp_path / "ck")
    with pytest.warns(EdgeAIWarning, match=r"generation config sets num_beams, which edgeai generate does not apply"):
        pkg = export_model("hf", tmp_path / "pkg", precision="fp32", model=str(tmp_path / "ck"), task="text-generation")
    spec = pkg.manifest["generation"]
    assert (spec["repetition_penalty"], spec["no_repeat_ngram_size"], spec["clean_up_tokenization_spaces"]) == (1.3, 2, True)
    assert (spec["top_k"], spec["top_p"]) == (1, 0.9)
    with edgeai.load(pkg.path, variant="fp32") as pipe:
        gen = generator_for(pipe)
        for prompt in _prompts()[:6]:
            ids = gen.encode(prompt)
            with torch.inference_mode():  # greedy, one beam: the config's penalty and ban still apply
                ref = model.generate(torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                                     max_new_tokens=10, do_sample=False, num_beams=1)[0].tolist()[len(ids):]
            ref = ref[: ref.index(0)] if 0 in ref else ref
            got = pipe.generate(prompt, max_new_tokens=10)
            assert got["new_tokens"] == len(ref) and got["text"] == tok.clean_up_tokenization(_final(gen, ref)), prompt
            # sampling keeps the config's top_k (1 here: the likeliest token, so greedy's text), as transformers samples
            assert [pipe.generate(prompt, max_new_tokens=10, temperature=1.5, seed=s)["text"] for s in range(2)] == [got["text"]] * 2
        # a call's own penalty replaces the config's (the n-gram ban stays): the texts change
        words = [pipe.generate(p, max_new_tokens=10, repetition_penalty=1.0)["text"] for p in _prompts()[:6]]
        assert words != [pipe.generate(p, max_new_tokens=10)["text"] for p in _prompts()[:6]]
        # cleaned as transformers' decode cleans, and the pieces a stream sends, token by token, join into it
        # " n ' t": one rule makes a match for the next (" n't", then "n't"), decided 4 characters on
        for raw, clean in [("I do n't know . Really ? It 's fine , we 're ok !", "I don't know. Really? It's fine, we're ok!"),
                           ("We ca n ' t stop , I do n ' t know", "We can't stop, I don't know")]:
            ids = tok(raw)["input_ids"]
            pieces: list[str] = []
            stream = _Stream(gen, (), pieces.append)
            for k in range(1, len(ids) + 1):
                stream.add(ids[:k])
            text = stream.finish(ids)
            assert "".join(pieces) == text == tok.decode(ids) == clean
            assert len(pieces) > 3  # sent as it came, not all at the end


def test_a_chat_template_sees_no_tools_and_no_documents_as_none():
    """transformers renders with tools=None and documents=None: `is not none` tests (Mistral's
    templates) were true on jinja's Undefined, and `tools|tojson` failed every chat."""
    from transformers.utils.chat_template_utils import _compile_jinja_template

    from edgeai.chat import render

    t = ("{% if tools is not none %}[TOOLS]{{ tools|tojson }}[/TOOLS]{% endif %}{% if documents is not none %}[DOCS]{% endif %}"
         "{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}\n{% endfor %}{% if add_generation_prompt %}<assistant>{% endif %}")
    chat = [{"role": "user", "content": "Zürich?"}]
    want = _compile_jinja_template(t).render(messages=chat, tools=None, documents=None, add_generation_prompt=True)
    assert render({"chat_template": t}, chat) == want == "<user>Zürich?\n<assistant>"


def test_sampling_defaults_to_the_checkpoints_top_k_else_transformers():
    from edgeai.sampling import DEFAULT_TOP_K, Sampling

    assert Sampling(temperature=0.7).for_model({}).top_k == DEFAULT_TOP_K == transformers.GenerationConfig().top_k
    assert (Sampling(temperature=0.7).for_model({"top_k": 20, "top_p": 0.8}).top_k, Sampling(temperature=0.7).for_model({"top_p": 0.8}).top_p) == (20, 0.8)
    assert Sampling(temperature=0.7).for_model({"top_k": 0}).top_k is None  # 0: no top-k, as in transformers
    given = Sampling(temperature=0.7, top_k=3, top_p=1.0).for_model({"top_k": 20, "top_p": 0.8})
    assert (given.top_k, given.top_p) == (3, 1.0)  # a call's own replace them
    greedy = Sampling().for_model({"top_k": 20, "top_p": 0.8})
    assert (greedy.top_k, greedy.top_p) == (None, None)
    greedy.check()  # nothing for a greedy call to refuse


def test_a_model_without_a_position_table_takes_the_length_it_was_trained_on(tmp_path):
    # BLOOM (ALiBi) names no position table but its seq_length, MPT its max_seq_len: a bare 512 capped both (review)
    import json

    from edgeai.export.transformer import max_length

    def length(config: dict, tokenizer: dict | None = None) -> int:
        (tmp_path / "tokenizer_config.json").write_text(json.dumps(tokenizer or {"model_max_length": 10**30}))
        return max_length(tmp_path, config)

    assert length({"model_type": "bloom", "seq_length": 2048}) == 2048
    assert length({"model_type": "mpt", "max_seq_len": 4096}) == 4096
    assert length({"model_type": "bloom"}, {"model_max_length": 1024}) == 1024  # the tokenizer's own limit, not 512
    assert length({"model_type": "bloom"}) == 512  # nothing says: the old default
    assert length({"model_type": "gpt2", "n_positions": 128, "seq_length": 2048}) == 128  # a table always bounds


def test_stop_strings_are_strings_and_a_dict_is_not_its_keys():
    from edgeai.errors import InputError
    from edgeai.generation import _sampling

    assert _sampling({"stop": "a"}).stop == ("a",) and _sampling({"stop": ["a", "b"]}).stop == ("a", "b")
    with pytest.raises(InputError, match="stop takes non-empty strings"):
        _sampling({"stop": {"a": 1}})  # it read as the stop string "a" (review)
