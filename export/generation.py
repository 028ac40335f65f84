"""Checkpoints for text generation: Optimum's export with a KV cache, validated step by step.

Decoder-only: Optimum's ``text-generation-with-past`` config, built with
``use_past_in_inputs=True``, gives one graph that takes the cache of the previous steps (empty on
the first) and returns the new one: what edgeai's generation loop (edgeai.generation) runs.

Encoder-decoder (T5, BART, ...): the package's ``model.onnx`` is Optimum's decoder *with past*,
which also runs the first step, from an empty self-attention cache. What it needs besides is the
cross-attention cache, the keys and values of the encoder's output; ``encoder.onnx`` computes
them: Optimum's encoder joined to Optimum's first-step decoder, kept only as far as those
outputs (onnx.compose). Optimum's own runtime uses the encoder plus a decoder merged with an If
node; two plain graphs keep the per-step decoder quantizable by ONNX Runtime's quantizers.

Validation runs the loop's own step function on ONNX Runtime beside PyTorch: the logits of the
prompt and of each cached step must stay within the tolerance, on real sentences.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgeai.errors import ExportError

VALIDATION_STEPS = 6
ENCODER = "encoder.onnx"  # an encoder-decoder's second graph: the prompt to the cross-attention cache
KEEP = "logits_to_keep"


def onnx_config(model, ck):
    """Optimum's config for the graph run at every step: the decoder, taking its cache as inputs."""
    from .hf import _tasks_manager

    tasks = _tasks_manager().get_supported_tasks_for_model_type(ck.model_type.replace("_", "-"), "onnx", library_name="transformers")
    model.config.use_cache = True
    if ck.task == "text2text-generation":
        config = tasks["text2text-generation-with-past"](model.config, task="text2text-generation", use_past_in_inputs=True)
        return config.with_behavior("decoder", use_past=True, use_past_in_inputs=True)
    return tasks["text-generation-with-past"](model.config, use_past_in_inputs=True)


def write_seq2seq(model, config, path: Path) -> int:
    """An encoder-decoder's two graphs: the decoder with past at ``path`` and the cross-attention
    cache's graph beside it (ENCODER). Returns the opset."""
    import tempfile

    import onnx
    from onnx import compose
    from optimum.exporters.utils import get_encoder_decoder_models_for_export

    from .hf import write_onnx

    parts = get_encoder_decoder_models_for_export(model, config)  # encoder, first-step decoder, decoder with past
    opset = write_onnx(*parts["decoder_with_past_model"], path)
    keep_last_logits(path)
    with tempfile.TemporaryDirectory(dir=path.parent) as tmp:
        write_onnx(*parts["encoder_model"], Path(tmp) / "encoder.onnx")
        write_onnx(*parts["decoder_model"], Path(tmp) / "first.onnx")
        encoder, first = onnx.load(str(Path(tmp) / "encoder.onnx")), onnx.load(str(Path(tmp) / "first.onnx"))
    cross = [o.name for o in first.graph.output if o.name.startswith("present.") and ".encoder." in o.name]
    # The first-step decoder reads the encoder's mask and output; its own input is the start token.
    first = compose.add_prefix(first, "first/")
    encoder.graph.node.append(onnx.helper.make_node("Identity", ["attention_mask"], ["attention_mask_out"]))
    encoder.graph.output.append(onnx.helper.make_tensor_value_info("attention_mask_out", onnx.TensorProto.INT64, ["batch_size", "encoder_sequence_length"]))
    first.ir_version = encoder.ir_version
    joined = compose.merge_models(
        encoder, first, io_map=[("last_hidden_state", "first/encoder_hidden_states"), ("attention_mask_out", "first/encoder_attention_mask")],
        outputs=[f"first/{n}" for n in cross])
    for out in joined.graph.output:  # present.N.encoder.key: the names the decoder's cache inputs take
        joined.graph.node.append(onnx.helper.make_node("Identity", [out.name], [out.name.removeprefix("first/")]))
        out.name = out.name.removeprefix("first/")
    for inp in joined.graph.input:
        if inp.name == "first/input_ids":
            inp.name = "decoder_input_ids"
            for node in joined.graph.node:
                node.input[:] = ["decoder_input_ids" if i == "first/input_ids" else i for i in node.input]
    onnx.checker.check_model(joined)
    onnx.save(joined, str(path.parent / ENCODER))
    return opset


def keep_last_logits(path: Path) -> bool:
    """Give the graph a ``logits_to_keep`` input (transformers' name): the language-model head
    runs on that many last positions only. The prompt's step needs one row of logits, and the
    head is a fifth of a small model's prompt time (SmolLM-135M: 576 x 49,152 of ~135M weights);
    transformers' generate skips it the same way. Optimum's graphs compute it for every position
    and no ONNX tool adds the cut, hence this edit. The held-out comparison keeps every position.
    False when the head is not a MatMul on the logits (the graph is left as it is)."""
    import onnx
    from onnx import TensorProto, helper

    model = onnx.load(str(path), load_external_data=False)  # weights stay where they are
    graph = model.graph
    producer = {o: n for n in graph.node for o in n.output}
    head = producer.get("logits")
    if head is not None and head.op_type == "Add":  # a biased head: MatMul then Add
        head = next((producer[i] for i in head.input if i in producer and producer[i].op_type == "MatMul"), None)
    if head is None or head.op_type != "MatMul":
        return False
    graph.input.append(helper.make_tensor_value_info(KEEP, TensorProto.INT64, [1]))
    graph.initializer.extend([onnx.numpy_helper.from_array(np.array([np.iinfo(np.int64).max]), "/edgeai/keep_end"),
                              onnx.numpy_helper.from_array(np.array([1]), "/edgeai/keep_axis")])
    cut = [helper.make_node("Neg", [KEEP], ["/edgeai/keep_start"], name="/edgeai/KeepStart"),
           helper.make_node("Slice", [head.input[0], "/edgeai/keep_start", "/edgeai/keep_end", "/edgeai/keep_axis"],
                            ["/edgeai/kept"], name="/edgeai/KeepLast")]
    at = list(graph.node).index(head)
    head.input[0] = "/edgeai/kept"
    for i, node in enumerate(cut):
        graph.node.insert(at + i, node)
    for out in graph.output:
        if out.name == "logits":
            out.type.tensor_type.shape.dim[1].dim_param = "kept_positions"
    onnx.save(model, str(path))
    return True


def spec(model, config, path: Path, tok, max_length: int) -> dict:
    """The manifest's ``generation`` entry: cache names and shape, EOS ids, limits; for an
    encoder-decoder also the cross-attention cache, its graph and the decoder's start token."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    inputs = {i.name: i for i in graph.input}
    caches = [{"input": n, "output": n.replace("past_key_values", "present")} for n in inputs if n.startswith("past_key_values.")]
    past = [c for c in caches if ".encoder." not in c["input"]]
    dims = inputs[past[0]["input"]].type.tensor_type.shape.dim
    kv_heads, head_dim = int(dims[1].dim_value), int(dims[3].dim_value)
    gen_cfg = getattr(model, "generation_config", None)
    eos = _setting(model, gen_cfg, "eos_token_id")
    eos = [int(e) for e in (eos if isinstance(eos, (list, tuple)) else [eos]) if e is not None]
    out = {"tokenizer": "tokenizer.json", "past": past, "kv_shape": [kv_heads, head_dim], "kv_dtype": "float32",
           "eos_token_ids": eos, "max_length": int(max_length)}
    if len(caches) > len(past):
        out.update(encoder=ENCODER, cross=[c for c in caches if ".encoder." in c["input"]],
                   decoder_start_token_id=int(_setting(model, gen_cfg, "decoder_start_token_id")))
    for name in ("forced_bos_token_id", "forced_eos_token_id") if len(caches) > len(past) else ("forced_eos_token_id",):
        value = _setting(model, gen_cfg, name)
        if isinstance(value, int):
            out[name] = value
    # applied by transformers' generate even greedy (Qwen2.5-Instruct ships a repetition_penalty):
    # the runtime's defaults; other rules it would apply are said, not silently dropped (review)
    if isinstance(p := _setting(model, gen_cfg, "repetition_penalty"), (int, float)) and p > 0 and p != 1.0:
        out["repetition_penalty"] = float(p)
    if isinstance(n := _setting(model, gen_cfg, "no_repeat_ngram_size"), int) and n > 0:
        out["no_repeat_ngram_size"] = n
    # what sampling keeps by default (a call's own replace them): transformers' generate samples with these
    if isinstance(k := _setting(model, gen_cfg, "top_k"), int) and not isinstance(k, bool) and k >= 0:
        out["top_k"] = k  # 0: no top-k
    if isinstance(p := _setting(model, gen_cfg, "top_p"), (int, float)) and 0 < p < 1:
        out["top_p"] = float(p)
    if ignored := [k for k in _NOT_APPLIED if _setting(model, gen_cfg, k) not in (None, 0, 1, [], {})]:
        import warnings

        from edgeai.errors import EdgeAIWarning

        warnings.warn(f"the checkpoint's generation config sets {', '.join(ignored)}, which edgeai generate does not apply: "
                      "its text may differ from transformers' generate", EdgeAIWarning, stacklevel=2)
    return out


# generation_config rules of transformers' generate that edgeai's loop (edgeai/sampling.py) does not
# apply (at 0 or 1, or unset, they change nothing)
_NOT_APPLIED = ("num_beams", "min_new_tokens", "min_length", "suppress_tokens", "begin_suppress_tokens", "bad_words_ids", "sequence_bias",
                "encoder_no_repeat_ngram_size", "exponential_decay_length_penalty", "encoder_repetition_penalty")


def tokenizer_settings(path: Path) -> dict:
    """What the runtime takes from the checkpoint's tokenizer as transformers loads it (once):
    :func:`chat_settings`, and ``clean_up_tokenization_spaces`` where it is set (checkpoints saved
    by transformers 4.3x-4.44 wrote it true: their decode joins " ." and " n't" back)."""
    tok = _auto_tokenizer(path)
    clean = {"clean_up_tokenization_spaces": True} if getattr(tok, "clean_up_tokenization_spaces", False) is True else {}
    return {**chat_settings(path, tok), **clean}


def _auto_tokenizer(path: Path):
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(str(path), local_files_only=True, trust_remote_code=False)
    except Exception:  # noqa: BLE001 -- no tokenizer transformers can load: nothing to take from it
        return None


def chat_settings(path: Path, tok=None) -> dict:
    """The tokenizer's chat template (Jinja source) and the special tokens it may name, for the
    runtime's renderer (edgeai.chat); empty when the checkpoint has none. ``tok``: the tokenizer
    transformers loaded from ``path``, when the caller has it."""
    if (tok := tok or _auto_tokenizer(path)) is None:
        return {}
    template = getattr(tok, "chat_template", None)
    if isinstance(template, dict):  # named templates: the default one
        template = template.get("default")
    if not isinstance(template, str) or not template:
        return {}
    import warnings

    from edgeai.chat import render
    from edgeai.errors import EdgeAIWarning, InputError, PackageError

    tokens = {k: v for k, v in tok.special_tokens_map.items() if isinstance(v, str)}
    try:  # compiled now, not at the user's first --chat
        render({"chat_template": template, "chat_tokens": tokens}, [{"role": "user", "content": "hi"}])
    except PackageError as e:
        warnings.warn(f"{e.args[0].rstrip('.')}; the package is made without it, so it takes plain prompts, not chats.",
                      EdgeAIWarning, stacklevel=2)
        return {}
    except InputError:
        pass  # it compiles; refusing this one message (a system message required, say) is its own rule
    return {"chat_template": template, "chat_tokens": tokens}


def _setting(model, gen_cfg, name: str):
    """A generation setting: the generation config's, else the model config's."""
    value = getattr(gen_cfg, name, None) if gen_cfg is not None else None
    return value if value is not None else getattr(model.config, name, None)


def validate(model, path: Path, gen_spec: dict, tokenizer_file: Path, prompts: list[str], tolerance: float) -> tuple[dict, dict]:
    """PyTorch and the ONNX graph(s), greedy, side by side: the first step's logits and
    VALIDATION_STEPS cached steps for each prompt. (accuracy, details) or an ExportError."""
    import onnxruntime as ort

    from edgeai.generation import Generator, KVCache

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    encoder = (ort.InferenceSession(str(path.parent / gen_spec["encoder"]), providers=["CPUExecutionProvider"])
               if "encoder" in gen_spec else None)
    gen = Generator(session, gen_spec, tokenizer_file, encoder=encoder)
    reference = _seq2seq_reference if encoder is not None else _decoder_reference
    worst, steps, agree = 0.0, 0, 0
    for prompt in prompts:
        ids = gen.encode(prompt)[: gen.max_length - VALIDATION_STEPS - 1]
        ref = reference(model, ids, gen_spec)
        ref_logits = next(ref)
        if encoder is not None:
            prefix, cross = [gen.start], gen._encode(ids)
        else:
            prefix, cross = ids, None
        cache = KVCache(gen, len(prefix) + VALIDATION_STEPS + 1)
        got_logits = gen._step(prefix, 0, cache, cross)
        for step in range(VALIDATION_STEPS + 1):
            diff = float(np.abs(ref_logits.astype(np.float64) - got_logits).max())
            if not np.isfinite(diff) or diff > tolerance:
                raise ExportError(f"The ONNX export differs from PyTorch by {diff:.2e} in the logits at "
                                  f"{'the prompt' if step == 0 else f'cached step {step}'} of {prompt[:40]!r} "
                                  f"(tolerance {tolerance:.0e}); not writing it.")
            worst, steps = max(worst, diff), steps + 1
            token = int(ref_logits.argmax())
            agree += int(token == int(got_logits.argmax()))
            if step == VALIDATION_STEPS:
                break
            ref_logits = ref.send(token)
            got_logits = gen._step([token], len(prefix) + step, cache, cross)
    return ({"max_abs_diff": worst, "top1_agreement": agree / steps, "samples": float(steps)},
            {"vs": "pytorch", "checked": f"{len(prompts)} prompts, the first step and {VALIDATION_STEPS} cached steps each"})


def _decoder_reference(model, ids: list[int], gen_spec: dict):
    """PyTorch's last-position logits: of the prompt, then of each token sent, with its cache."""
    import torch

    with torch.inference_mode():
        out = model(input_ids=torch.tensor([ids]), use_cache=True)
    position = len(ids)
    while True:
        token = yield out.logits[0, -1].numpy()
        with torch.inference_mode():
            out = model(input_ids=torch.tensor([[token]]), past_key_values=out.past_key_values, use_cache=True,
                        attention_mask=torch.ones(1, position + 1, dtype=torch.long))
        position += 1


def _seq2seq_reference(model, ids: list[int], gen_spec: dict):
    """An encoder-decoder's logits in PyTorch: the decoder's start token, then each token sent."""
    import torch

    import inspect

    decoder = [int(gen_spec["decoder_start_token_id"])]
    encoder = model.get_encoder()
    # T5's encoder takes use_cache (and its config may say True after the export); BART's does not.
    no_cache = {"use_cache": False} if "use_cache" in inspect.signature(encoder.forward).parameters else {}
    with torch.inference_mode():
        encoded = encoder(input_ids=torch.tensor([ids]), **no_cache)
        while True:
            out = model(encoder_outputs=encoded, decoder_input_ids=torch.tensor([decoder]), use_cache=False)
            decoder.append((yield out.logits[0, -1].numpy()))
