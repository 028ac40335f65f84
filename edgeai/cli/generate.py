"""``edgeai generate``: stream a text-generation package's continuation of each prompt."""

from __future__ import annotations

import sys
from typing import Annotated, Optional

import typer

from ._common import print_json
from ._plain import note, style


def generate(
    prompts: Annotated[list[str], typer.Argument(help="Prompts; each is continued on its own.", show_default=False)],
    model: Annotated[str, typer.Option("--model", "-m", help="A text-generation package directory.", show_default=False)],
    max_new_tokens: Annotated[int, typer.Option(min=1, help="The most tokens to add.")] = 64,
    temperature: Annotated[float, typer.Option(min=0.0, help="0 is greedy; above 0 samples.")] = 0.0,
    top_k: Annotated[Optional[int], typer.Option(min=1, help="Sample among the K likeliest tokens.")] = None,
    top_p: Annotated[Optional[float], typer.Option(min=0.0, max=1.0, help="Sample among the likeliest tokens that hold P of the probability.")] = None,
    repetition_penalty: Annotated[float, typer.Option(min=0.0, help="Above 1 discourages repeating tokens (transformers' rule).")] = 1.0,
    seed: Annotated[Optional[int], typer.Option(help="Seed for sampling (same seed, same text).")] = None,
    stop: Annotated[Optional[list[str]], typer.Option(help="Stop when this text appears (it is left out); may be repeated.")] = None,
    chat: Annotated[bool, typer.Option("--chat", help="Send each PROMPT as a user message through the model's chat template.")] = False,
    system: Annotated[Optional[str], typer.Option(help="With --chat: a system message first.", show_default=False)] = None,
    json_: Annotated[bool, typer.Option("--json", help="Print one JSON document: text, token counts, timings.")] = False,
    provider: Annotated[str, typer.Option(help="auto, cpu, cuda or tensorrt.")] = "auto",
    variant: Annotated[str, typer.Option(help="auto, fp32, optimized, int8, int4 or fp16.")] = "auto",
    threads: Annotated[Optional[int], typer.Option(min=1, help="CPU threads [default: ONNX Runtime's choice].")] = None,
) -> None:
    """Continue each PROMPT with a text-generation package (or answer it, with an encoder-decoder
    such as T5), streaming the text as it is decoded; tokens/s and the time to the first token
    follow on stderr. Greedy unless --temperature is given."""
    import edgeai
    from edgeai.errors import InputError
    from edgeai.generation import generator_for

    if system is not None and not chat:
        raise InputError("--system goes with --chat.")
    pipe = edgeai.load(model, provider=provider, variant=variant, threads=threads)
    gen = generator_for(pipe)  # a package that cannot generate says so before any prompt is printed
    if chat and not gen.spec.get("chat_template"):
        raise InputError(f"{pipe.name}'s tokenizer has no chat template; leave out --chat.")
    if pipe.session.choice.fell_back:
        note(f"note: {pipe.provider_note}")
    options = {"max_new_tokens": max_new_tokens, "temperature": temperature, "top_k": top_k, "top_p": top_p,
               "repetition_penalty": repetition_penalty, "seed": seed, "stop": stop or None}
    answer = chat or pipe.task == "text2text-generation"  # the output is an answer, not a continuation

    def message(p: str):  # what generate() takes for PROMPT
        if not chat:
            return p
        return ([{"role": "system", "content": system}] if system is not None else []) + [{"role": "user", "content": p}]

    if json_:
        results = [{"input": p, **pipe.generate(message(p), **options)} for p in prompts]
        print_json({"model": model, "variant": pipe.variant, "provider": pipe.provider, "results": results})
        return
    for p in prompts:
        sys.stdout.write(style(p, "bold") + (" → " if answer else ""))
        sys.stdout.flush()
        stats = {}
        for piece in pipe.generate(message(p), stream=True, stats=stats, **options):
            sys.stdout.write(piece)
            sys.stdout.flush()
        sys.stdout.write("\n")
        sys.stdout.flush()
        note(style(f"[{stats.get('new_tokens', 0)} tokens, {stats.get('tokens_per_s', 0):.1f} tokens/s, "
                   f"first token {stats.get('ttft_ms', 0):.0f} ms, {stats.get('finish_reason')}; "
                   f"{pipe.variant} on {pipe.provider}]", "dim", stream=sys.stderr))
