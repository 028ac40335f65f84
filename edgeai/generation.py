"""Text generation on ONNX Runtime: a decoder-only model's loop with its KV cache, torch-free.

The package's graph (Optimum's ``text-generation-with-past`` export) takes ``input_ids``,
``attention_mask``, optionally ``position_ids``, and one ``past_key_values.N.key/value`` pair per
layer; it returns ``logits`` and the ``present.N.key/value`` cache. The first step runs the
whole prompt with an empty cache (length 0); each later step runs one token. An encoder-decoder
(``generation.encoder``) first runs the prompt through ``encoder.onnx``, which returns the
cross-attention cache; the decoder then starts from its start token with an empty cache of its
own and reads the cross-attention cache, bound once, at every step.

The cache lives in buffers (``KVCache``): two per layer and key/value, on the session's device,
each long enough for the prompt and every new token. A step reads the past from one and the graph
writes its present (past + new token, the graph's Concat) straight into the other, both bound by
IO binding; the next step swaps them. So nothing is copied between steps and ONNX Runtime
allocates no cache of its own; only the last position's logits come back to numpy. A request
takes its buffers at the start, allocating them only when the one kept from an earlier request
is too short or in use, and gives them back at the end, so a loop of requests allocates once.

Tokens are picked as transformers' ``generate`` does (edgeai/sampling.py). Text is decoded as it comes;
a piece goes out once it ends in no incomplete UTF-8 sequence and, with stop strings, can no longer start one.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np

from ._tokenbytes import CLEAN_UP_HOLD, clean_up, settled, space_before
from .errors import InputError, a_type, with_article
from .sampling import Sampling, pick
from .streams import stream_pieces

@dataclass(eq=False)  # compared and hashed by identity: a pipeline keeps the ones in flight in a set
class Request:
    """One prompt's generation: the tokens so far and what the caller sees."""

    prompt_ids: list[int]
    sampling: Sampling
    cancel: threading.Event = field(default_factory=threading.Event)  # the caller's (Pipeline.cancel leaves it: halted)
    dropped: threading.Event = field(default_factory=threading.Event)  # a stream's reader gone, or its pipeline closed
    halted: Callable[[], bool] = lambda: False  # Pipeline.cancel() called since the request was made
    stream: bool = False
    ids: list[int] = field(default_factory=list)
    finish_reason: str | None = None
    ttft_ms: float = 0.0
    decode_s: float = 0.0
    lead: str = ""  # what the text drops before its first token, shown between prompt and continuation (space_before)


class Generator:
    """The loop over one ONNX Runtime session of a ``text-generation`` package."""

    def __init__(self, session, spec: dict, tokenizer_file, device: str = "cpu", device_id: int = 0, encoder=None):
        from tokenizers import Tokenizer

        self.session = session
        self.encoder = encoder  # an encoder-decoder's encoder.onnx session; None for a decoder-only model
        self.cross = [(c["input"], c["output"]) for c in spec.get("cross", [])]
        self.start = spec.get("decoder_start_token_id")
        self.forced_bos, self.forced_eos = spec.get("forced_bos_token_id"), spec.get("forced_eos_token_id")
        self.spec = spec
        self.tokenizer = Tokenizer.from_file(str(tokenizer_file))
        self.tokenizer.no_padding()
        self.tokenizer.no_truncation()
        self.device, self.device_id = device, device_id
        self.inputs = [i.name for i in session.get_inputs()]
        self.past = [(p["input"], p["output"]) for p in spec["past"]]
        self.kv_heads, self.head_dim = spec["kv_shape"]
        self.eos = set(spec.get("eos_token_ids") or [])
        self.max_length = int(spec["max_length"])
        self.dtype = np.float16 if spec.get("kv_dtype") == "float16" else np.float32
        self._idle: KVCache | None = None  # the cache of the last request, kept for the next one
        self._idle_lock = threading.Lock()

    # -- tokens ------------------------------------------------------------------------------
    def encode(self, prompt: str, special: bool = True) -> list[int]:
        """The prompt's ids; ``special=False`` for a rendered chat, whose template wrote them."""
        ids = self.tokenizer.encode(prompt, add_special_tokens=special).ids
        if not ids:
            raise InputError("The prompt has no characters this model's tokenizer keeps; give some words.")
        return ids

    def decode(self, ids: Sequence[int]) -> str:
        text = self.tokenizer.decode(list(ids), skip_special_tokens=True)
        return clean_up(text) if self.spec.get("clean_up_tokenization_spaces") else text

    # -- the loop -----------------------------------------------------------------------------
    def run(self, req: Request, on_text: Callable[[str], None] | None = None) -> str:
        """Generate for ``req`` until EOS, a stop string, max_new_tokens or cancel; ``on_text``
        receives each new piece of text. Returns the whole text."""
        t0, req.sampling = time.perf_counter(), req.sampling.for_model(self.spec)  # + the checkpoint's generation_config
        # The decoder's own sequence: the prompt, or an encoder-decoder's start token.
        prefix, cross = (req.prompt_ids, None) if self.encoder is None else ([self.start], self._encode(req.prompt_ids))
        budget = min(req.sampling.max_new_tokens, self.max_length - len(prefix))
        cache = self._take_cache(len(prefix) + budget)
        try:
            return self._loop(req, prefix, cross, budget, cache, _Stream(self, req.sampling.stop, on_text), t0)
        finally:
            self._give_back(cache)

    def _loop(self, req: Request, prefix: list[int], cross, budget: int, cache: "KVCache", stream: "_Stream", t0: float) -> str:
        rng = np.random.default_rng(req.sampling.seed)
        step_ids = prefix
        while True:
            if req.cancel.is_set() or req.dropped.is_set() or req.halted():
                req.finish_reason = "cancelled"
                break
            logits = self._step(step_ids, len(prefix) + len(req.ids) - len(step_ids), cache, cross)
            # transformers' forced tokens: EOS last (first too at max_new_tokens 1), an encoder-decoder's first (mBART's language)
            last = self.forced_eos is not None and len(req.ids) == budget - 1
            forced = self.forced_eos if last else self.forced_bos if not req.ids else None
            token = forced if forced is not None else pick(logits, prefix + req.ids, req.sampling, rng)
            if not req.ids:
                req.ttft_ms = (time.perf_counter() - t0) * 1e3
                t_first = time.perf_counter()
                req.lead = space_before(self.decode, prefix[-1], token) if self.encoder is None else ""
            if token in self.eos:
                req.finish_reason = "eos"
                break
            req.ids.append(token)
            if stream.add(req.ids):
                req.finish_reason = "stop"
                break
            if len(req.ids) >= budget:
                req.finish_reason = "length"
                break
            step_ids = [token]
        if req.ids and len(req.ids) > 1:
            req.decode_s = time.perf_counter() - t_first
        return stream.finish(req.ids)

    def _take_cache(self, length: int) -> "KVCache":
        with self._idle_lock:
            cache, self._idle = self._idle, None
        if cache is None or cache.length < length:
            # rounded up, so that a slightly longer next request finds it long enough
            cache = KVCache(self, min(self.max_length, -(-length // 256) * 256))
        return cache

    def _give_back(self, cache: "KVCache") -> None:
        with self._idle_lock:  # keep the longer one; requests in parallel made their own
            if self._idle is None or self._idle.length < cache.length:
                self._idle = cache

    def _encode(self, prompt_ids: list[int]) -> tuple[list, int]:
        """An encoder-decoder's prompt through encoder.onnx: the cross-attention cache, as bound
        values, and the prompt's length (the decoder's encoder_attention_mask)."""
        io = self.encoder.io_binding()
        io.bind_cpu_input("input_ids", np.asarray([prompt_ids], dtype=np.int64))
        io.bind_cpu_input("attention_mask", np.ones((1, len(prompt_ids)), dtype=np.int64))
        io.bind_cpu_input("decoder_input_ids", np.asarray([[self.start]], dtype=np.int64))
        for _, out in self.cross:
            io.bind_output(out, self.device, self.device_id)
        _run(self.encoder, io)
        return io.get_outputs(), len(prompt_ids)

    def _step(self, ids: list[int], start: int, cache: "KVCache", cross: tuple[list, int] | None = None):
        """One forward pass: ``ids`` at positions ``start...``, reading the first ``start``
        positions of ``cache`` and writing ``start + len(ids)`` into it; an encoder-decoder's
        ``cross`` (from _encode). Returns the last position's logits."""
        n = len(ids)
        total = start + n
        io = self.session.io_binding()
        feeds = {"input_ids": np.asarray([ids], dtype=np.int64),
                 "attention_mask": np.ones((1, total), dtype=np.int64),
                 "position_ids": np.arange(start, total, dtype=np.int64)[None],
                 "logits_to_keep": np.ones(1, dtype=np.int64)}  # the head on the last position only
        if cross is not None:
            feeds["encoder_attention_mask"] = np.ones((1, cross[1]), dtype=np.int64)
            for (name, _), value in zip(self.cross, cross[0]):
                io.bind_ortvalue_input(name, value)
        for name in self.inputs:
            if name in feeds:
                io.bind_cpu_input(name, feeds[name])
        io.bind_output("logits", "cpu")  # first: get_outputs() follows the binding order
        cache.bind(io, start, total)
        _run(self.session, io)
        cache.swap()
        return io.get_outputs()[0].numpy()[0, -1]


def _run(session, io) -> None:
    """One bound run; what ONNX Runtime refuses (a position past what the model was trained on)
    is one InputError sentence naming the node, without its log line on stderr."""
    import onnxruntime as ort

    from .session import run_failure

    quiet = ort.RunOptions()
    quiet.log_severity_level = 4
    try:
        session.run_with_iobinding(io, quiet)
    except Exception as e:  # ONNX Runtime's pybind errors (Fail, InvalidArgument, RuntimeException)
        raise InputError(run_failure(e)) from None


class KVCache:
    """A request's KV cache: per layer and key/value, two flat buffers on the session's device,
    allocated once for ``length`` positions. The past is read from one (as its first positions,
    shaped (1, heads, past, head_dim): a contiguous prefix) while the graph writes its present
    into the other; then they swap. Written here because ONNX Runtime's Python API offers the
    pieces (IO binding to a device pointer) but no cache manager for Optimum's graphs."""

    def __init__(self, gen: Generator, length: int):
        import onnxruntime as ort

        self.names, self.dtype = gen.past, gen.dtype
        self.heads, self.dim, self.length = gen.kv_heads, gen.head_dim, length
        self.device, self.device_id = gen.device, gen.device_id
        size = self.heads * length * self.dim
        self.buffers = [[ort.OrtValue.ortvalue_from_shape_and_type([size], self.dtype, self.device, self.device_id)
                         for _ in range(2)] for _ in self.names]
        self.read = 0  # which of the two holds the past

    def bind(self, io, past: int, total: int) -> None:
        if past == 0:
            self.read = 0
        for (name_in, name_out), pair in zip(self.names, self.buffers):
            src, dst = pair[self.read], pair[1 - self.read]
            io.bind_input(name_in, self.device, self.device_id, self.dtype, [1, self.heads, past, self.dim], src.data_ptr())
            io.bind_output(name_out, self.device, self.device_id, self.dtype, [1, self.heads, total, self.dim], dst.data_ptr())

    def swap(self) -> None:
        self.read = 1 - self.read


class _Stream:
    """Incremental decoding: text pieces that never end inside a UTF-8 character or a possible
    stop string; ``add`` says when a stop string has appeared."""

    def __init__(self, gen: Generator, stop: Sequence[str], on_text: Callable[[str], None] | None):
        self.gen, self.stop, self.on_text = gen, tuple(x for x in stop if x), on_text
        self.sent = 0
        self.text = ""
        self.stopped = False
        # held back so that a piece sent is never cleaned again (gen: anything with decode, tests' tokenizer stand-ins too)
        clean = getattr(gen, "spec", {}).get("clean_up_tokenization_spaces")
        self.hold = max(max((len(x) for x in self.stop), default=1) - 1, CLEAN_UP_HOLD if clean else 0)

    def add(self, ids: list[int]) -> bool:
        self.text = self.gen.decode(ids)
        cut = self._stop_at()
        if cut is not None:
            self.text, self.stopped = self.text[:cut], True
            return True
        done = settled(self.gen.decode, ids, self.text, getattr(self.gen, "tokenizer", None))
        self._send(done, len(done) - self.hold)
        return False

    def _stop_at(self) -> int | None:
        hits = [i for i in (self.text.find(x, max(0, self.sent - len(x))) for x in self.stop) if i >= 0]
        return min(hits) if hits else None

    def _send(self, text: str, upto: int) -> None:
        if upto > self.sent:
            piece = text[self.sent:upto]
            self.sent = upto
            if self.on_text:
                self.on_text(piece)

    def finish(self, ids: list[int]) -> str:
        if not self.stopped:  # cut at a stop string, the text is whole
            from ._tokenbytes import final_text

            text = self.gen.decode(ids)
            self.text = final_text(self.gen.decode, getattr(self.gen, "tokenizer", None), ids, text,
                                   lambda: settled(self.gen.decode, ids, text))
        self._send(self.text, len(self.text))
        return self.text


def result(req: Request, text: str) -> dict[str, Any]:
    """The contract's result dict of one finished request."""
    new = len(req.ids)
    # The decode rate, tokens after the first over their time: none with one token (0.0 would read as stalled).
    rate = round((new - 1) / req.decode_s, 3) if new > 1 and req.decode_s > 0 else None
    return {"text": text, "prompt_tokens": len(req.prompt_ids), "new_tokens": new, "finish_reason": req.finish_reason,
            "ttft_ms": round(req.ttft_ms, 3) if new else None, "tokens_per_s": rate}  # cancelled before a first token: none


# -- Pipeline.generate ------------------------------------------------------------------------------
def _not_generation(pipe) -> None:
    raise InputError(f"generate() needs a text-generation model; {pipe.name!r} is {with_article(pipe.task)} model (use predict, or `edgeai run`).")


def _sampling(options: dict[str, Any]) -> Sampling:
    """generate's sampling options, checked (one InputError sentence for a bad value)."""
    options = dict(options)
    stop = options.pop("stop", None)
    s = Sampling(stop=() if stop is None else (stop,) if isinstance(stop, (str, dict)) or not hasattr(stop, "__iter__") else tuple(stop),
                 **options)
    s.check()
    return s


def check_request(pipe, options: dict[str, Any]) -> None:
    """What ``Pipeline.submit`` checks before it queues a generation, so that a mistake is raised
    by the call that made it, not later by ``Future.result()``: a text-generation model, and
    options that generate takes (an unknown name is a TypeError, as a call's would be)."""
    import inspect

    if "generation" not in pipe.package.manifest:
        _not_generation(pipe)
    takes = set(inspect.signature(pipe.generate).parameters) - {"prompt"}
    for name in options:
        if name not in takes:
            raise TypeError(f"generate() got an unexpected keyword argument {name!r}")
    _sampling({k: v for k, v in options.items() if k in Sampling.__dataclass_fields__})
    _check_cancel(options.get("cancel"))


def _check_cancel(cancel: Any) -> None:
    if cancel is not None and not callable(getattr(cancel, "is_set", None)):
        raise InputError(f"cancel takes a threading.Event (setting it stops the generation at its next step); got {a_type(cancel)}.")


def generator_for(pipe) -> Generator:
    """The pipeline's generation loop (made on first use), or one sentence for other models."""
    spec = pipe.package.manifest.get("generation")
    if spec is None:
        _not_generation(pipe)
    gen = getattr(pipe, "_gen", None)
    if gen is None:
        device, device_id = pipe.session._device  # where the cache stays between steps
        session = pipe.session._session
        encoder = None
        if "encoder" in spec:  # an encoder-decoder: its encoder runs on the decoder's providers and threads
            import onnxruntime as ort

            from ._ortcache import CPU_DISABLED_OPTIMIZERS
            from .session import session_options

            providers, options = session.get_providers(), session.get_provider_options()
            # Options of its own: the decoder's were changed where its graph was loaded (edgeai._ortcache).
            own = session_options(session.get_session_options().intra_op_num_threads or None, spin=True)
            cpu = {"disabled_optimizers": CPU_DISABLED_OPTIMIZERS} if providers[0] == "CPUExecutionProvider" else {}
            encoder = ort.InferenceSession(str(pipe.package.asset_path(spec["encoder"])), own,
                                           providers=providers, provider_options=[options[p] for p in providers], **cpu)
        gen = Generator(session, spec, pipe.package.asset_path(spec["tokenizer"]), device, device_id, encoder)
        pipe._gen = gen
    return gen


def generate(pipe, prompt: Any, stream: bool = False, cancel: threading.Event | None = None,
             stats: dict | None = None, _cancels: int | None = None, **options: Any) -> Any:
    """What ``Pipeline.generate`` does (see there); ``pipe`` counts a streamed request as a call
    in flight until its last piece, so ``close()`` waits for it."""
    from . import chat
    from .text import check_text

    if _cancels is None:  # Pipeline.cancel()s so far: as submit() saw them, else now
        _cancels = getattr(pipe._local, "cancels", None)
        _cancels = pipe._cancels if _cancels is None else _cancels
    s = _sampling(options)
    _check_cancel(cancel)
    gen = generator_for(pipe)
    if (why := chat.misread_chat(prompt)) is not None:
        raise InputError(why)
    if chat.is_conversation(prompt):  # one chat: the model's template makes the prompt
        ids = gen.encode(chat.render(gen.spec, prompt), special=False)
    elif isinstance(prompt, (list, tuple)):
        if stream:
            raise InputError("stream=True takes one prompt; call generate once per prompt.")
        if not prompt:
            raise InputError("generate() was given an empty list; pass at least one prompt.")
        return [generate(pipe, p, cancel=cancel, _cancels=_cancels, **options) for p in prompt]
    else:
        ids = gen.encode(check_text(prompt))
    if len(ids) > gen.max_length - (gen.encoder is None):  # here: a stream says so before its first piece
        raise InputError(f"The prompt is {len(ids)} tokens; " + (  # T5's encoder reads it: not "in all" (review)
            f"this model's encoder reads at most {gen.max_length}." if gen.encoder is not None else
            f"this model takes at most {gen.max_length} in all, the prompt and at least one new token."))
    req = Request(ids, s, cancel if cancel is not None else threading.Event(), stream=stream,
                  halted=lambda: pipe._cancels != _cancels)
    if not stream:
        with pipe._track(req):
            r = result(req, gen.run(req))
        if stats is not None:
            stats.update(r)
        return r

    def run(on_text: Callable[[str], None]) -> None:
        def first(piece: str) -> None:  # the CLI shows a continuation's lead before its first piece
            if stats is not None:
                stats.setdefault("lead", req.lead)
            on_text(piece)

        with pipe._in_call(), pipe._track(req):
            r = result(req, gen.run(req, first))
        if stats is not None:
            stats.update(r)

    class _Stopped:  # the caller's Event or a Pipeline.cancel() since: no piece already made is handed over either
        is_set = staticmethod(lambda: req.cancel.is_set() or req.halted())

    return stream_pieces(run, _Stopped, req.dropped)
