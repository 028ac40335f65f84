"""Decoder-only checkpoints for text generation: Optimum's export with a KV cache, validated step by step.

Optimum's ``text-generation-with-past`` config, built with ``use_past_in_inputs=True``, gives one
graph that takes the cache of the previous steps (empty on the first) and returns the new one:
what edgeai's generation loop (edgeai.generation) runs. Validation runs that loop's own step
function on ONNX Runtime beside PyTorch with its cache: the logits of the prompt and of each
cached step must stay within the tolerance, on real sentences.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgeai.errors import ExportError

VALIDATION_STEPS = 6


def onnx_config(model, ck):
    from .hf import _tasks_manager

    tasks = _tasks_manager().get_supported_tasks_for_model_type(ck.model_type.replace("_", "-"), "onnx", library_name="transformers")
    model.config.use_cache = True
    return tasks["text-generation-with-past"](model.config, use_past_in_inputs=True)


def spec(model, config, path: Path, tok, max_length: int) -> dict:
    """The manifest's ``generation`` entry: cache names and shape, EOS ids, limits."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    inputs = {i.name: i for i in graph.input}
    past = [{"input": n, "output": n.replace("past_key_values", "present")} for n in inputs if n.startswith("past_key_values.")]
    dims = inputs[past[0]["input"]].type.tensor_type.shape.dim
    kv_heads, head_dim = int(dims[1].dim_value), int(dims[3].dim_value)
    gen_cfg = getattr(model, "generation_config", None)
    eos = getattr(gen_cfg, "eos_token_id", None) if gen_cfg is not None else None
    eos = eos if eos is not None else model.config.eos_token_id
    eos = [int(e) for e in (eos if isinstance(eos, (list, tuple)) else [eos]) if e is not None]
    return {"tokenizer": "tokenizer.json", "past": past, "kv_shape": [kv_heads, head_dim], "kv_dtype": "float32",
            "eos_token_ids": eos, "max_length": int(max_length)}


def validate(model, path: Path, gen_spec: dict, tokenizer_file: Path, prompts: list[str], tolerance: float) -> tuple[dict, dict]:
    """PyTorch and the ONNX graph, greedy, side by side: the prompt's logits and VALIDATION_STEPS
    cached steps for each prompt. (accuracy, details) or an ExportError."""
    import onnxruntime as ort
    import torch

    from edgeai.generation import Generator

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    gen = Generator(session, gen_spec, tokenizer_file)
    worst, steps, agree = 0.0, 0, 0
    for prompt in prompts:
        ids = gen.encode(prompt)[: gen.max_length - VALIDATION_STEPS - 1]
        with torch.inference_mode():
            out = model(input_ids=torch.tensor([ids]), use_cache=True)
        ref_logits, cache = out.logits[0, -1].numpy(), out.past_key_values
        got_logits, past = gen._step(ids, 0, None)
        for step in range(VALIDATION_STEPS + 1):
            diff = float(np.abs(ref_logits.astype(np.float64) - got_logits).max())
            if not np.isfinite(diff) or diff > tolerance:
                raise ExportError(f"The ONNX export differs from PyTorch by {diff:.2e} in the logits at "
                                  f"{'the prompt' if step == 0 else f'cached step {step}'} of {prompt[:40]!r} "
                                  f"(tolerance {tolerance:.0e}); not writing it.")
            worst, steps = max(worst, diff), steps + 1
            token = int(ref_logits.argmax())
            agree += int(token == int(got_logits.argmax()))
            position = len(ids) + step
            with torch.inference_mode():
                out = model(input_ids=torch.tensor([[token]]), past_key_values=cache, use_cache=True,
                            attention_mask=torch.ones(1, position + 1, dtype=torch.long))
            ref_logits, cache = out.logits[0, -1].numpy(), out.past_key_values
            got_logits, past = gen._step([token], position, past)
    return ({"max_abs_diff": worst, "top1_agreement": agree / steps, "samples": float(steps)},
            {"vs": "pytorch", "checked": f"{len(prompts)} prompts, the prompt and {VALIDATION_STEPS} cached steps each"})
