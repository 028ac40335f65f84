"""``edgeai generate``: stream a text-generation package's continuation of each prompt."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from ._common import plain_error, print_json, variant_notes
from ._plain import note, shown, style
from .run import _check_options, _run_bulk


def generate(
    prompts: Annotated[list[str], typer.Argument(metavar="PROMPTS...", help="Prompts; each is continued on its own. A text file, or - for standard "
                                                 "input, gives one prompt per non-blank line, as edgeai run reads them.",
                                            show_default=False)],
    model: Annotated[str, typer.Option("--model", "-m", help="A text-generation package directory.", show_default=False)],
    max_new_tokens: Annotated[int, typer.Option(min=1, help="The most tokens to add.")] = 64,
    temperature: Annotated[float, typer.Option(min=0.0, help="0 is greedy; above 0 samples.")] = 0.0,
    top_k: Annotated[Optional[int], typer.Option(min=1, help="Sample among the K likeliest tokens (default: the checkpoint's generation_config top_k, else 50, as transformers samples).")] = None,
    top_p: Annotated[Optional[float], typer.Option(help="Sample among the likeliest tokens that hold P of the probability, 0 < P <= 1.")] = None,
    repetition_penalty: Annotated[Optional[float], typer.Option(help="Above 0; above 1 discourages repeating tokens (transformers' rule) [default: the model's generation_config, else 1].", show_default=False)] = None,
    seed: Annotated[Optional[int], typer.Option(help="Seed for sampling (same seed, same text).")] = None,
    stop: Annotated[Optional[list[str]], typer.Option(help="Stop when this text appears (it is left out); may be repeated.")] = None,
    chat: Annotated[bool, typer.Option("--chat", help="Send each PROMPT as a user message through the model's chat template.")] = False,
    system: Annotated[Optional[str], typer.Option(help="With --chat: a system message first.", show_default=False)] = None,
    literal: Annotated[bool, typer.Option("--text", help="Every PROMPT is a prompt as it is, even one that names a file.")] = False,
    json_: Annotated[bool, typer.Option("--json", help="Print one JSON document: text, token counts, timings.")] = False,
    out_file: Annotated[Optional[Path], typer.Option("--out", help="Write one JSON line per prompt to this file (or a .parquet table), resumable: prompts already there are skipped.", show_default=False)] = None,
    retry_errors: Annotated[bool, typer.Option("--retry-errors", help="With --out: run again the prompts whose lines are errors.")] = False,
    new_file: Annotated[bool, typer.Option("--new-file", help="With --out: write OUT.<model>-<variant>.jsonl beside it instead (when it holds another model's or variant's results).")] = False,
    provider: Annotated[str, typer.Option(help="auto, cpu, cuda or tensorrt.")] = "auto",
    variant: Annotated[str, typer.Option(help="auto, fp32, optimized, int8, int4 or fp16.")] = "auto",
    threads: Annotated[Optional[int], typer.Option(min=1, help="CPU threads [default: the count the chosen variant was timed fastest on here, else ONNX Runtime's choice].")] = None,
) -> None:
    """Continue each PROMPT with a text-generation package (or answer it, with an encoder-decoder
    such as T5), streaming the text as it is decoded; tokens/s and the time to the first token
    follow on stderr. Greedy unless --temperature is given."""
    import edgeai
    from edgeai.errors import EdgeAIError, InputError, shell_arg, with_article
    from edgeai.chat import as_user
    from edgeai.generation import generator_for
    from edgeai.home import resolve_builtin
    from edgeai.sampling import Sampling
    from edgeai.text import check_text
    from edgeai.text_inputs import expand_text_inputs, input_fields

    if system is not None and not chat:
        raise InputError("--system goes with --chat.")
    _check_options(out_file, None, new_file, retry_errors, json_=json_)  # --out and its options: as edgeai run has them
    options = {"max_new_tokens": max_new_tokens, "temperature": temperature, "top_k": top_k, "top_p": top_p,
               "repetition_penalty": repetition_penalty, "seed": seed}
    try:  # before a build, a load or a prompt is printed
        Sampling(**options, stop=tuple(stop or ())).check()
    except InputError as e:  # the options named as typed (--top-p), not as generate()'s keywords (review)
        import re

        raise InputError(re.sub(r"\b(max_new_tokens|temperature|top_k|top_p|repetition_penalty|seed|stop)\b",
                                lambda m: "--" + m[1].replace("_", "-"), str(e))) from None
    options["stop"] = stop or None
    if not Path(model).exists() and (b := resolve_builtin(model)) is not None and "generation" not in b.task:
        raise InputError(f"{model} is a built-in {b.task} model; edgeai generate needs a text-generation package "
                         "(edgeai export --model DIR_OR_ID --task text-generation).")
    pipe = edgeai.load(model, provider=provider, variant=variant, threads=threads)
    if "generation" not in pipe.package.manifest:  # before any prompt is printed
        raise InputError(f"{model} is {with_article(pipe.task)} package; edgeai generate needs a text-generation one "
                         f"(run this one with edgeai run --model {shell_arg(model)}).")
    gen = generator_for(pipe)
    if chat and not gen.spec.get("chat_template"):
        raise InputError(f"{pipe.name}'s tokenizer has no chat template; leave out --chat.")
    variant_notes(pipe, variant)
    if out_file is not None:  # as `edgeai run --out` writes and resumes its lines, with these options recorded on them
        _run_bulk(pipe, prompts, out_file, 16, None, None,
                  opts={"literal": literal, "retry_errors": retry_errors, "new_file": new_file,
                        "generate": {**options, "chat": chat, "system": system}})
        return
    prompts = expand_text_inputs(prompts, literal)  # a file's lines, or standard input's, as run reads them
    answer = chat or pipe.task == "text2text-generation"  # the output is an answer, not a continuation

    def message(p: str):  # what generate() takes for PROMPT; an unreadable file's error, not an empty chat
        return as_user(check_text(p), system) if chat else p

    failed: list[str] = []  # each prompt on its own account: one that fails leaves the others their results
    if json_:
        results = []
        for p in prompts:
            try:
                results.append({**input_fields(p, prompt=True), **pipe.generate(message(p), **options)})
            except EdgeAIError as e:
                results.append({**input_fields(p, prompt=True), "error": str(e)})
                failed.append(_failed(p, e))
        from edgeai.journal import model_id

        print_json({"model": model, "package": model_id(pipe.package, pipe.variant), "variant": pipe.variant,
                    "provider": pipe.provider, "results": results})
    for p in prompts if not json_ else []:
        stats: dict = {}
        try:
            pieces = pipe.generate(message(p), stream=True, stats=stats, **options)  # checks the prompt first
        except EdgeAIError as e:
            failed.append(_failed(p, e))
            continue
        sys.stdout.write(style(shown(p, keep="\n\t"), "bold") + (" → " if answer else ""))  # the prompt as typed, not run
        sys.stdout.flush()
        try:
            for i, piece in enumerate(pieces):  # a continuation gets the space its first token means (the text drops it)
                sys.stdout.write(stats.get("lead", "") + piece if i == 0 and not answer and not p[-1:].isspace() else piece)
                sys.stdout.flush()
        except EdgeAIError as e:  # a step ONNX Runtime refused: the text so far stays, the error follows
            failed.append(_failed(p, e))
        finally:  # Ctrl-C or a closed pipe: the request is cancelled and its step under way waited for
            pieces.close()
        sys.stdout.write("\n")
        sys.stdout.flush()
        if "finish_reason" not in stats:  # the run failed or was interrupted: stats holds only the lead shown
            continue
        n, reason = stats.get("new_tokens", 0), stats.get("finish_reason")
        if reason == "length" and n < max_new_tokens:
            reason = (f"length: the model's context is {gen.max_length} tokens, prompt included" if gen.encoder is None else
                      f"length: the model's answers are at most {gen.max_length - 1} tokens")
        rate, ttft = stats.get("tokens_per_s"), stats.get("ttft_ms")
        note(style(f"[{n} token{'s' if n != 1 else ''}, {'-' if rate is None else f'{rate:.1f}'} tokens/s, "
                   f"first token {'-' if ttft is None else f'{ttft:.0f}'} ms, {reason}; "
                   f"{pipe.variant} on {pipe.provider}]", "dim", stream=sys.stderr))
    for e in failed:
        plain_error(e)
    if failed:
        raise typer.Exit(1)


def _failed(prompt: str, e: Exception) -> str:
    """A failed prompt's error line: ``prompt FILE:LINE: ...`` for a file's line, ``prompt 'its
    first 40 characters': ...`` otherwise; an unreadable file's error names the file itself."""
    from edgeai.text_inputs import TextLine, UnreadFile

    if isinstance(prompt, UnreadFile):
        return str(e)
    shown = prompt.input if isinstance(prompt, TextLine) else repr(prompt if len(prompt) <= 40 else prompt[:39] + "…")
    return f"prompt {shown}: {e}"
