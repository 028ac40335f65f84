"""Chat templates: a conversation rendered to the prompt text the checkpoint was trained on.

A checkpoint's tokenizer carries its chat template as Jinja source (``tokenizer_config.json`` or
``chat_template.jinja``); the export copies it and the special tokens it names into the
manifest's ``generation``. This renders it the way transformers' ``apply_chat_template`` does:
a sandboxed Jinja environment with ``trim_blocks`` and ``lstrip_blocks``, loop controls, a
``tojson`` that does not escape HTML, ``raise_exception`` and ``strftime_now``, the special
tokens as variables. Written here rather than imported because that renderer lives in
transformers, which needs torch; jinja2 alone is small and the runtime stays torch-free.
"""

from __future__ import annotations

import json
from datetime import datetime
from functools import lru_cache
from typing import Any, Sequence

from .errors import DependencyError, InputError, PackageError, with_article

MESSAGE = '{"role": ..., "content": ...}'


def is_conversation(prompt: Any) -> bool:
    """A list of message dicts (one conversation), as opposed to a list of prompts."""
    return isinstance(prompt, (list, tuple)) and bool(prompt) and all(isinstance(m, dict) for m in prompt)


def check(messages: Sequence[Any]) -> list[dict]:
    if not is_conversation(messages):
        raise InputError(f"A chat is a list of {MESSAGE} messages; got {type(messages).__name__}.")
    for i, m in enumerate(messages):
        if not isinstance(m.get("role"), str) or "content" not in m:
            raise InputError(f"Message {i} of the chat has no role or content; each message is {MESSAGE}.")
    messages = [{**m, "content": _text(i, m["content"])} for i, m in enumerate(messages)]
    if not any(m["content"].strip() for m in messages):
        raise InputError("Every message of the chat is empty; give the model some words.")
    return messages


def _text(i: int, content: Any) -> str:
    """A message's content as one string. OpenAI-style content parts (``[{"type": "text",
    "text": ...}, ...]``) are joined with newlines, as OpenAI-compatible servers do for text-only
    models; a part that is not text (an image, audio) is refused, since this model reads text."""
    if isinstance(content, str):
        return content
    if isinstance(content, (list, tuple)):  # no parts: an empty message, as "" is (was "list content, not ... a list")
        texts = []
        for part in content:
            kind = part.get("type") if isinstance(part, dict) else type(part).__name__
            if kind == "text" and not isinstance(part.get("text"), str):
                got = "no \"text\" key" if "text" not in part else f"{with_article(type(part['text']).__name__)} as its text"
                raise InputError(f'Message {i} of the chat has a text part with {got}; each part is {{"type": "text", "text": ...}}.')
            if kind != "text":
                raise InputError(f"Message {i} of the chat has a {kind!r} content part; this model reads text only, "
                                 'so each part is {"type": "text", "text": ...}.')
            texts.append(part["text"])
        return "\n".join(texts)
    raise InputError(f"Message {i} of the chat has {type(content).__name__!r} content, not a string "
                     "or a list of text parts.")


def as_user(text: str, system: str | None = None) -> list[dict]:
    """``text`` as a user's message of one chat, after a system message when one is given."""
    return ([{"role": "system", "content": system}] if system is not None else []) + [{"role": "user", "content": text}]


def misread_chat(prompt: Any) -> str | None:
    """Why ``prompt`` looks like a chat given in the wrong form (one message, not in a list; a
    list mixing messages and plain prompts), else None."""
    if isinstance(prompt, dict) and "role" in prompt:
        return f"A chat is a list of messages: put this one in a list, [{MESSAGE}]."
    if isinstance(prompt, (list, tuple)) and any(isinstance(p, dict) for p in prompt) and not is_conversation(prompt):
        return (f"This list mixes messages and other prompts: a chat is a list of {MESSAGE} messages only, "
                "and a list of prompts holds plain texts (or chats) only.")
    return None


def render(spec: dict, messages: Sequence[Any], add_generation_prompt: bool = True) -> str:
    """The prompt text of ``messages`` under the package's chat template."""
    source = spec.get("chat_template")
    if not source:
        raise InputError("This model's tokenizer has no chat template; give it a plain prompt.")
    try:
        import jinja2
    except ImportError:
        raise DependencyError("Chat templates need jinja2: pip install jinja2.") from None
    messages = check(messages)
    try:
        template = _compile(source)
    except jinja2.exceptions.TemplateSyntaxError as e:
        raise PackageError(f"The model's chat template is not a valid Jinja template: {e} (line {e.lineno}).") from None
    # A chat that ends with the assistant's words is a prefill: the model continues that message, as
    # transformers' text-generation pipeline does (continue_final_message); a new turn after it answered
    # the model's own half-sentence (review)
    prefill = add_generation_prompt and messages[-1]["role"] == "assistant"
    if prefill and not messages[-1]["content"].strip():  # nothing to continue: the model's new turn, as the generation
        messages, prefill = messages[:-1], False         # prompt opens it (cut, "<|im_start|>assistant" lost its newline)
    if prefill:
        messages = [*messages[:-1], {**messages[-1], "content": messages[-1]["content"] + _CONTINUE}]
    try:
        text = template.render(messages=messages, tools=None, documents=None, add_generation_prompt=add_generation_prompt and not prefill,
                               **spec.get("chat_tokens", {}))
    except jinja2.exceptions.TemplateError as e:
        raise InputError(f"The model's chat template refused this chat: {e}") from None
    except Exception as e:  # noqa: BLE001 -- a template's own Python error ('str' + 1): still the template's refusal
        raise InputError(f"The model's chat template failed on this chat: {type(e).__name__}: {e}.") from None
    return _cut_at_continue(text, messages[-1]["content"][: -len(_CONTINUE)]) if prefill else text


# Appended to a prefilled assistant message: the rendered chat is cut where it lands (with its space, or
# before it and the template's trailing space where the template trims the message).
_CONTINUE = "EDGEAI_CONTINUE_HERE "


def _cut_at_continue(text: str, final: str) -> str:
    at = text.rfind(_CONTINUE.strip())
    if at < 0 or final.strip() not in text[:at]:  # left out, or rewritten (part of it dropped: review)
        done = "leaves that message out" if at < 0 else "does not keep that message as it is (it drops or changes part of it)"
        raise InputError(f"The chat ends with an assistant message to continue, but the model's chat template {done}; "
                         "end the chat with a user message.")
    return text[:at] if text[at : at + len(_CONTINUE)] == _CONTINUE else text[:at].rstrip()


@lru_cache(maxsize=8)
def _compile(source: str):
    import jinja2
    import jinja2.ext
    import jinja2.nodes
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    def raise_exception(message: str):
        raise jinja2.exceptions.TemplateError(message)

    def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
        return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)

    class Generation(jinja2.ext.Extension):
        """transformers' {% generation %}...{% endgeneration %} (it marks the assistant's tokens for
        training): its body renders as it is, as apply_chat_template renders it."""
        tags = {"generation"}

        def parse(self, parser):
            lineno = next(parser.stream).lineno
            body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
            return jinja2.nodes.Scope(body, lineno=lineno)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                        extensions=[jinja2.ext.loopcontrols, Generation])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
    return env.from_string(source)
