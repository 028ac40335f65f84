"""How fast a package runs here: ``edgeai.bench(pkg, ...)`` and ``edgeai bench PKG``.

For each variant, execution provider and batch size: session creation time, first-inference
time, p50/p90/p99 latency, throughput and peak resident memory; optionally PyTorch eager on the
same weights (``against="torch"``), with ratios.

Timing is done the way FACTS.md says it must be on a small shared machine:

- every measurement runs in a fresh process (``edgeai._bench_worker``), so no other thread
  pool (PyTorch's OpenMP, another session's) spins on the same cores and memory figures are
  the variant's own;
- rounds alternate the order of the cases (forward, then backward), so drift in the machine's
  load hits every case alike;
- each process warms up before it times, and times until it has enough runs for a p99
  (``runs``) or has run ``min_time`` seconds; the percentiles pool the runs of all rounds.

The parent never imports torch; a PyTorch case imports it in its own child process.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from . import _records, providers as _providers
from ._records import unsteady
from .data.feeds import OTHER_AXIS, batch_axis, check_room, input_kind, load_inputs, random_feed, text_feeds
from .choice import call_batch, check_threads, fixed_batch
from .rows import per_row
from .text import one_text_per_call
from .errors import DependencyError, EdgeAIError, InputError, PackageError, ProviderError, real, whole, with_article
from .machine import machine_id
from .package import Package, factory_key

__all__ = ["bench", "bench_feed", "BENCH_TOKENS"]

# Texts are timed at this many tokens (or the model's maximum, if lower).
BENCH_TOKENS = 128
Step = Callable[[int, int, str], None]


@dataclass(frozen=True)
class Case:
    engine: str  # "onnxruntime" (through edgeai's Session), "pytorch", or "same-model" (--factory's check, untimed)
    variant: str  # a variant name, or "pytorch"
    provider: str  # ONNX Runtime provider name; for PyTorch "torch-cpu" / "torch-cuda"
    batch: int
    threads: int | None = None  # this case's own thread count (auto's), instead of the run's

    @property
    def label(self) -> str:
        where = _providers.short_name(self.provider)
        own = f", {self.threads} thread{'s' if self.threads > 1 else ''}" if self.threads else ""
        return f"{self.variant} on {where}, batch {self.batch}{own}"


# -- inputs ------------------------------------------------------------------------------------
def bench_feed(pkg: Package, batch: int, tokens: int = BENCH_TOKENS, inputs: dict[str, np.ndarray] | None = None) -> dict[str, np.ndarray]:
    """A typical input of ``batch`` items: the user's arrays (rows repeated to the batch size), a
    text of ``tokens`` tokens, or seeded noise of the model's input shape."""
    if batch > 1 and (own := fixed_batch(pkg)) not in (None, batch):  # the batch axis, not a sequence-first model's first
        # a batch the graph cannot take would be timed at its own size, its items/s off by their
        # ratio (batch 1, the recorded default, is the graph's one call: choice.call_batch)
        i = pkg.manifest["inputs"][0]
        wrapped = str((pkg.manifest.get("provenance") or {}).get("source", "")).endswith(".onnx")  # no export of ours to redo
        again = ("export the ONNX file again with a dynamic batch axis" if wrapped else
                 f"export it with --dynamic {i['name']}:{batch_axis(i['shape'])}:batch")
        raise InputError(f"{pkg.name} takes a fixed batch of {own} (input {i['name']} is {i['shape']}): bench it "
                         f"with --batch {own}, or {again}.")
    if inputs is not None:
        axes = {i["name"]: batch_axis(i["shape"]) for i in pkg.manifest["inputs"]}  # a sequence-first model's too (review)
        return {k: np.take(v, np.arange(batch) % v.shape[axes.get(k, 0)], axis=axes.get(k, 0)) for k, v in inputs.items()}
    if input_kind(pkg) == "text":
        return _text_feed(pkg, batch, tokens)
    if input_kind(pkg) == "generation":  # one decode step after ``tokens`` cached positions
        from .data.feeds import decoder_feed

        return decoder_feed(pkg, np.full((batch, 1), 1, dtype=np.int64), past=_decode_past(pkg, tokens))
    # Integers below 2 where no table bounds them (masks, token types), else over the table's rows (random_feed).
    return random_feed(pkg.manifest["inputs"], batch=batch, seed=0, other_axis=OTHER_AXIS, high=2)


def _decode_past(pkg: Package, tokens: int) -> int:
    """A generation package's timed step: one token after this many cached ones."""
    return min(tokens, int(pkg.manifest["generation"]["max_length"]) - 1)


def _text_feed(pkg: Package, batch: int, tokens: int) -> dict[str, np.ndarray]:
    """``batch`` copies of one held-out text, tokenized to ``tokens`` tokens."""
    from edgeai.data.texts import HELD_OUT

    text = " ".join([max(HELD_OUT, key=len)] * 8)  # long enough to fill ``tokens`` tokens
    [one] = text_feeds(pkg, [text], batch=1, max_length=_text_tokens(pkg, tokens))
    return {k: np.repeat(v, batch, axis=0) for k, v in one.items()}


def _check_tokens(pkg: Package, tokens: int | None, arrays) -> int:
    """``tokens`` as asked (default: BENCH_TOKENS, or the model's most); one the model cannot take
    is refused, where it was cut to the model's most without a word (review)."""
    if tokens is None:
        return BENCH_TOKENS
    kind = input_kind(pkg)
    if kind not in ("text", "generation") or arrays is not None:
        raise InputError("tokens sets the length of the texts bench makes; " + (
            "it is timing the given arrays." if arrays is not None else f"{pkg.name} is {with_article(kind)} model, not a text one."))
    most = _text_tokens(pkg, 10**9) if kind == "text" else _decode_past(pkg, 10**9)
    if isinstance(tokens, bool) or not isinstance(tokens, (int, np.integer)) or not 1 <= tokens <= most:
        raise InputError(f"--tokens must be 1..{most} for {pkg.name} (its most{' before a new token' if kind == 'generation' else ''}); got {tokens!r}.")
    return int(tokens)


def _text_tokens(pkg: Package, tokens: int) -> int:
    return min(tokens, int(pkg.manifest["preprocess"]["max_length"]))


# -- the run -----------------------------------------------------------------------------------
def _resolve_providers(requested: str | Sequence[str]) -> list[str]:
    names = [requested] if isinstance(requested, str) else list(requested)
    names = [n.strip() for part in names for n in part.split(",") if n.strip()] or ["auto"]
    resolved: list[str] = []
    for name in names:
        if name == "auto":
            from .choice import expected_provider

            p = expected_provider("auto")
        else:
            p = _providers.canonical(name)
            reason = _providers.unavailable_reason(p)
            if reason:
                raise ProviderError(f"{_providers.short_name(p)} cannot run on this machine: {reason}.")
        if p not in resolved:
            resolved.append(p)
    return resolved


def _parse_variants(pkg: Package, variants: str | Sequence[str]) -> list[str]:
    if variants in ("all", None) or variants == ["all"]:
        return list(pkg.variants)
    names = [variants] if isinstance(variants, str) else list(variants)
    names = [n.strip() for part in names for n in part.split(",") if n.strip()]
    if not names:
        raise InputError("No variant named; use --variant all or e.g. --variant fp32,int8.")
    for n in names:
        pkg.variant(n)  # a clear error for a variant the package lacks
    return list(dict.fromkeys(names))


def _skip_damaged(pkg: Package, names: list[str]) -> dict[str, str]:
    """``--variant all``: a variant whose file is missing or damaged is left out (name -> why), so
    the intact ones are still timed; ``names`` keeps the rest. None intact: an error naming each."""
    skipped = {}
    for n in list(names):
        try:
            pkg.variant_path(n)
        except PackageError as e:
            skipped[n] = str(e).split("; the ")[0].rstrip(".")  # without variant_path's "the X variant is intact"
            names.remove(n)
    if not names:
        raise PackageError(f"No variant of {pkg.path} is intact: " + "; ".join(f"{n} ({why})" for n, why in skipped.items())
                           + "; copy the package again (or export it again).")
    return skipped


def _torch_cases(pkg: Package, against: str | None, factory: str | None, devices: list[str]) -> list[str]:
    if against is None:
        if factory is not None:
            raise InputError("--factory names the PyTorch code to compare with; use it with --against torch.")
        return []
    if against != "torch":
        raise InputError(f"Unknown reference {against!r}; edgeai compares with torch (PyTorch eager).")
    if importlib.util.find_spec("torch") is None:
        raise DependencyError("--against torch needs PyTorch: pip install 'edgeai[export]'.")
    from edgeai import families

    fam = families.families().get(pkg.manifest["family"])  # whether it can rebuild its PyTorch model (unknown: cannot)
    if factory is None and (fam is None or not fam.has_hook("reference")):
        raise InputError(f"{pkg.name} is a {pkg.manifest['family']} model: name the PyTorch code that builds it with "
                         "--factory FILE.py:FN (a package never runs code by itself).")
    made = factory_key(str((pkg.manifest.get("provenance") or {}).get("source", "")))
    if factory is not None and made[1] and factory_key(factory)[1] and made != factory_key(factory):  # review: another model timed
        raise InputError(f"{pkg.name} was exported from {pkg.manifest['provenance']['source']}; --factory {factory} builds "
                         "another model. Name the factory it was exported from.")
    return [f"torch-{d}" for d in devices]


def bench(
    package: str | os.PathLike | Package,
    variants: str | Sequence[str] = "all",
    providers: str | Sequence[str] = "auto",
    batches: Sequence[int] = (1,),
    threads: int | None = None,
    rounds: int = 3,
    runs: int | None = None,
    min_time: float = 1.0,
    against: str | None = None,
    factory: str | None = None,
    inputs: str | os.PathLike | dict[str, np.ndarray] | None = None,
    tokens: int | None = None,
    record: bool = False,
    on_step: Step | None = None,
    source: str = "bench",
    device_id: int = 0,
    auto: bool = False,
) -> dict[str, Any]:
    """Measure the package's variants; returns ``{"model", "machine", ..., "results": [row, ...],
    "unsteady", "skipped"}`` (:func:`edgeai._records.unsteady`: which rows look disturbed by a busy machine, or None;
    ``skipped``: the variants ``"all"`` left out because their file is missing or damaged, with why).

    A row: ``engine, variant, provider, batch, session_ms, first_ms, p50_ms, p90_ms, p99_ms,
    mean_ms, throughput`` (items/s), ``peak_rss_mb, runs, rounds, threads``, ``p50_by_round_ms`` and ``vs_torch``
    (p50 over PyTorch's p50 on the same device and batch, when ``against="torch"``; 1.0 on PyTorch's own rows).
    ``auto=True`` (with no ``threads``) also times what ``edgeai.load`` runs on the CPU when that
    differs from the rows above: the chosen variant on its recorded thread count.
    ``record=True`` stores the figures in the manifest (the PyTorch ones under ``reference``),
    where ``edgeai inspect``, ``edgeai report`` and ``variant="auto"`` read them. GPU rows also
    carry ``placement`` (nodes per provider) and are recorded under this CPU + the GPU's name.
    """
    from .pipeline import open_package

    pkg = package if isinstance(package, Package) else open_package(package)
    if bad := pkg.damaged_assets():  # an encoder or tokenizer gone: nothing would time what runs
        raise PackageError(pkg.damage_sentence(bad))
    names = _parse_variants(pkg, variants)
    skipped = _skip_damaged(pkg, names) if variants in ("all", None) or variants == ["all"] else {}
    provs = _resolve_providers(providers)
    if not batches or any(not isinstance(b, int) or b < 1 for b in batches):
        raise InputError(f"Batch sizes must be positive integers; got {list(batches)}.")
    batches = tuple(dict.fromkeys(call_batch(pkg) if b == 1 else b for b in batches))  # 1,1: once; 1: one call of a fixed batch
    whole("rounds", rounds, 1), runs is None or whole("runs", runs, 1, 10**6)  # 1.5: an InputError, not a TypeError (review)
    real("min_time", min_time, low=0)  # NaN and infinity were taken, and said in the footer
    check_threads(threads)  # its ceiling too: every worker would start all of them
    torch_provs = _torch_cases(pkg, against, factory, sorted({"cuda" if p != _providers.CPU else "cpu" for p in provs}))
    arrays = load_inputs(inputs, pkg) if isinstance(inputs, (str, os.PathLike)) else inputs
    asked, tokens = tokens, _check_tokens(pkg, tokens, arrays)
    described = _describe_inputs(pkg, inputs, tokens)
    if record:
        _records.check_comparable(pkg, names, provs, batches, described, device_id)
    cases = [Case("onnxruntime", v, p, b) for p in provs for b in batches for v in names]
    if auto and threads is None and _providers.CPU in provs:
        from .choice import choose_variant, resolve_threads

        chosen = choose_variant(pkg, _providers.CPU, device_id)[0]
        own = resolve_threads(pkg, chosen, _providers.CPU, device_id=device_id)[0]
        cases += [Case("onnxruntime", chosen, _providers.CPU, b, own) for b in batches if own and chosen not in skipped]
    cases += [Case("pytorch", "pytorch", p, b) for p in torch_provs for b in batches]
    per: dict[Case, list[dict]] = {c: [] for c in cases}
    gone: set[str] = set()
    total, done = len(cases) * rounds, 0
    # each file's hash checked once, not per case and round
    models = {c.variant: pkg.variant_path(c.variant) for c in cases if c.engine == "onnxruntime"}
    with tempfile.TemporaryDirectory(prefix="edgeai-bench-") as work:
        check_room(bench_feed(pkg, 1, tokens, arrays), max(batches))  # before a feed too large is made
        feeds = {}
        for b in batches:
            feeds[b] = Path(work) / f"feed-b{b}.npz"
            np.savez(feeds[b], **bench_feed(pkg, b, tokens, arrays))
        if factory is not None and torch_provs:  # the factory's model is the package's, by what it computes
            _run_worker(pkg, Case("same-model", "fp32", "torch-cpu", batches[0]), None, feeds[batches[0]], threads, 1, 0.0,
                        factory, Path(work), device_id)
        for r in range(rounds):
            for case in cases if r % 2 == 0 else list(reversed(cases)):
                if on_step:
                    on_step(done, total, case.label)
                # a variant another process replaces meanwhile (quantize) is left out, with a warning (_records)
                per[case] += _records.unless_replaced(pkg, case, gone, _run_worker, pkg, case, models.get(case.variant), feeds[case.batch],
                                                      case.threads or threads, runs, min_time, factory, Path(work), device_id)
                done += 1
        if on_step:
            on_step(done, total, "done")
    # A graph whose every first axis is fixed runs its own batch per call, whatever the case says
    # (bench_feed refuses other batches above 1): its items/s count the items it ran.
    own = {i["shape"][0] for i in pkg.manifest["inputs"] if i["shape"] and isinstance(i["shape"][0], int)}
    fixed = own.pop() if len(own) == 1 and all(i["shape"] and isinstance(i["shape"][0], int) for i in pkg.manifest["inputs"]) else None
    rows = [_aggregate(c, per[c], rounds, fixed or c.batch) for c in cases if c.variant not in gone]
    for row in rows:
        ref = next((t for t in rows if t["engine"] == "pytorch" and t["batch"] == row["batch"]
                    and (t["provider"] == "torch-cpu") == (row["provider"] == _providers.CPU)), None)
        row["vs_torch"] = 1.0 if row["engine"] == "pytorch" else float(f"{row['p50_ms'] / ref['p50_ms']:.4g}") if ref else None
    found = unsteady(rows)
    if record and _providers.CPU in provs and (one := _records.one_thread_too(pkg, rows, threads, device_id)):
        # what auto compares is recorded together: these variants' 1-thread figures too (_records)
        more = bench(pkg, one, "cpu", batches, 1, rounds, runs, min_time, inputs=arrays, tokens=asked, on_step=on_step,
                     device_id=device_id)
        rows += more["results"]
        found = "; ".join(f for f in (found, more["unsteady"]) if f) or None
    if record:
        _records.record(pkg, rows, source, device_id, described)
    return {
        "model": pkg.name,
        "package": str(pkg.path),
        "machine": machine_id(),
        "cores": os.cpu_count(),
        "device_id": device_id,
        "threads": threads,
        "rounds": rounds,
        "runs": runs,
        "min_time_s": None if runs else min_time,
        "inputs": described,
        "unsteady": found,
        "skipped": skipped,
        "recorded": record,
        "results": rows,
    }


def _describe_inputs(pkg: Package, inputs: Any, tokens: int) -> str:
    if isinstance(inputs, (str, os.PathLike)):
        return f"arrays from {Path(inputs).name}"  # recorded in the manifest: not the user's own path
    if inputs is not None:
        return "given arrays"
    if input_kind(pkg) == "text":
        n = _text_tokens(pkg, tokens)
        return f"a text of {n} token{'s' if n != 1 else ''} per item"
    if input_kind(pkg) == "generation":  # _feed: one decode step; items/s is then new tokens/s per sequence
        return f"one decode step (a new token per item) after {_decode_past(pkg, tokens)} cached tokens"
    return "seeded random inputs of the model's input shape"


def _run_worker(pkg: Package, case: Case, model: Path | None, feed: Path, threads: int | None, runs: int | None, min_time: float,
                factory: str | None, work: Path, device_id: int = 0) -> dict:
    spec = {
        "device_id": device_id,
        "engine": case.engine,
        "package": str(pkg.path),
        "feed": str(feed),
        "threads": threads,
        "runs": runs,
        "min_time": min_time,
    }
    if case.engine in ("pytorch", "same-model"):
        spec.update(device=case.provider.removeprefix("torch-"), factory=factory)
    else:
        # A graph that is not (yet) one of the package's variants (a quantizer's candidate) has no hash to check.
        info = pkg.variants.get(case.variant, {})
        spec.update(model=str(model), inputs=pkg.manifest["inputs"], outputs=pkg.manifest["outputs"],
                    provider=case.provider, sha256=info.get("sha256"), tensorrt=_providers.tensorrt_flags(case.variant, info),
                    per_row=input_kind(pkg) == "text" and one_text_per_call(info),  # timed as Pipeline runs it
                    rows=None if input_kind(pkg) == "text" else per_row(pkg.manifest, info))
    spec_file = work / "case.json"
    spec_file.write_text(json.dumps(spec))
    proc = subprocess.run([sys.executable, "-m", "edgeai._bench_worker", str(spec_file)], capture_output=True, text=True,
                          stdin=subprocess.DEVNULL, check=False)
    lines = proc.stdout.strip().splitlines()
    try:
        result = json.loads(lines[-1]) if lines else None
    except json.JSONDecodeError:
        result = None
    if isinstance(result, dict) and "error" in result:
        cls = {"ProviderError": ProviderError, "DependencyError": DependencyError, "InputError": InputError}.get(
            result.get("kind"), PackageError)
        raise cls(result["error"])
    if proc.returncode != 0 or not isinstance(result, dict):
        tail = proc.stderr.strip().splitlines()[-1:] or [f"exit code {proc.returncode}"]
        raise EdgeAIError(f"Measuring {case.label} failed in its process: {tail[0][:300]}")
    return result


def _sig(x: float, digits: int = 6) -> float:
    return float(f"{x:.{digits}g}")


def _aggregate(case: Case, results: list[dict], rounds: int, items: int) -> dict:
    times = np.concatenate([np.asarray(r["times_ms"], dtype=np.float64) for r in results])
    mean = float(times.mean())
    rss = [r["peak_rss_mb"] for r in results if r.get("peak_rss_mb") is not None]
    return {
        "engine": case.engine,
        "variant": case.variant,
        "provider": results[0]["provider"],
        "batch": case.batch,
        "session_ms": round(float(np.median([r["session_ms"] for r in results])), 3),
        "first_ms": round(float(np.median([r["first_ms"] for r in results])), 3),
        # Significant digits, not decimals: a tiny model's 0.0373 ms kept to 4 decimals was 0.13% off,
        # and its throughput no longer matched batch / p50.
        "p50_ms": _sig(p50 := float(np.percentile(times, 50))),
        # Each round's own median, in the order run: a ratio to another engine's same round is what
        # a shared machine's drift affects least (benchmarks/run_all.py reports the median and best).
        "p50_by_round_ms": [_sig(float(np.percentile(r["times_ms"], 50))) for r in results],
        "p90_ms": _sig(float(np.percentile(times, 90))),
        "p99_ms": _sig(float(np.percentile(times, 99))),
        "mean_ms": _sig(mean),
        # From the median, as every other figure here: one stalled call (a neighbour's) moved a mean-based
        # figure by 3x with no warning (review), and p50 is what auto and the ratios use.
        "throughput": _sig(items * 1000.0 / p50),
        "peak_rss_mb": round(max(rss), 1) if rss else None,
        "runs": int(times.size),
        "rounds": rounds,
        "threads": results[0]["threads"],
        "placement": results[0].get("placement") or {},
    }
