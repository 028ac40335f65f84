"""Writing bench's figures into the manifest (``record=True``), so that what ``variant="auto"``
compares was taken together: each variant's thread counts at one time, every variant on the
same inputs."""

from __future__ import annotations

import warnings
from collections.abc import Callable

from . import providers as _providers
from .atomic import read_manifest
from .errors import EdgeAIWarning, InputError, PackageError, user_level
from .machine import default_threads, machine_key
from .package import Package, now

# A model this quick can run faster on one thread: ONNX Runtime's default of one per core
# spends more handing each small op to a second core than it saves (sentiment LSTM, 2-core
# EPYC: int8 0.54 ms on one thread vs 0.70 ms on two; fp32 1.06 vs 0.86). Recording times it on
# one thread too, and pipelines given no thread count run with the faster (choice.resolve_threads).
ONE_THREAD_BELOW_MS = 2.0


def latency_key(entry: dict) -> str:
    """Where a latency entry lives in a variant's ``latency`` map: provider, machine, batch, and
    the thread count when one was set (ONNX Runtime's default has none)."""
    threads = f"|t{entry['threads']}" if entry.get("threads") else ""
    return f"{entry['provider']}|{entry['machine']}|b{entry['batch']}{threads}"


def _machine(provider: str, device_id: int) -> str:
    gpu = provider == "torch-cuda" or provider in (_providers.CUDA, _providers.TENSORRT)
    return machine_key(_providers.CUDA if gpu else _providers.CPU, device_id)


def check_comparable(pkg: Package, timed: list[str], providers: list[str], batches, inputs: str, device_id: int = 0) -> None:
    """Refuse, before any timing, a record that would put the timed variants' figures beside
    another variant's taken on other inputs (``--tokens 1`` beside 128): auto compares them as
    if alike, and chose fp32 timed on 1 token over int8 timed on 128 (review)."""
    for name, info in pkg.variants.items():
        if name in timed:
            continue
        for e in info.get("latency", {}).values():
            if (e["provider"] in providers and e.get("batch", 1) in batches and e.get("machine") == _machine(e["provider"], device_id)
                    and e.get("inputs") not in (None, inputs)):
                raise InputError(f"--record would put {', '.join(timed)}'s figures on {inputs} beside {name}'s on {e['inputs']}, "
                                 "and auto would compare them as if alike; time every variant (leave out --variant), or "
                                 f"time on the inputs {name} was timed on.")


def unless_replaced(pkg: Package, case, gone: set[str], measure: Callable[..., dict], *args) -> list[dict]:
    """``[measure(*args)]`` of one case; ``[]``, with the variant added to ``gone`` and a warning, when its
    measuring failed because another edgeai process replaced or removed the variant meanwhile (a
    quantize landing a new int8 deletes the old file): bench is a reader and takes no lock, and
    the missing file's error ended the whole bench, every other variant's figures lost (review)."""
    if case.variant in gone:
        return []
    try:
        return [measure(*args)]
    except PackageError:
        now_there = ((read_manifest(pkg.path) or {}).get("variants") or {}).get(case.variant) or {}
        if case.engine != "onnxruntime" or now_there.get("sha256") == pkg.variants.get(case.variant, {}).get("sha256"):
            raise
    gone.add(case.variant)
    warnings.warn(EdgeAIWarning(f"{case.variant} was replaced in {pkg.path} by another edgeai process while being timed, so "
                                "it is left out here; time it again with edgeai bench"), stacklevel=user_level())
    return []


def one_thread_too(pkg: Package, rows: list[dict], threads: int | None, device_id: int = 0) -> list[str]:
    """The variants to time on one thread as well, for a record at the default thread count: all
    of them (not yet timed on one) when the fastest runs under ONE_THREAD_BELOW_MS, or when one
    has a 1-thread figure on this CPU already (the record replaces it: it is re-timed, not lost)."""
    if threads is not None or default_threads() <= 1:
        return []
    cpu = [r for r in rows if r["engine"] == "onnxruntime" and r["provider"] == _providers.CPU]
    here = _machine(_providers.CPU, device_id)
    had = any(e.get("threads") == 1 and e["provider"] == _providers.CPU and e.get("machine") == here
              for r in cpu for e in pkg.variants.get(r["variant"], {}).get("latency", {}).values())
    if not had and not any(r["p50_ms"] < ONE_THREAD_BELOW_MS for r in cpu):
        return []
    return list(dict.fromkeys(r["variant"] for r in cpu if not any(o["variant"] == r["variant"] and o["threads"] == 1 for o in cpu)))


def record(pkg: Package, rows: list[dict], source: str, device_id: int = 0, inputs: str | None = None) -> None:
    """Store the figures under each variant's ``latency`` (PyTorch's under ``reference``), merged
    into the manifest as it is on disk under the package's lock (another writer may have added a
    variant meanwhile). A variant's figures of this machine, provider and batch that this run did
    not replace (other thread counts) are dropped: taken at another time, or on other inputs,
    auto would compare them with these as if alike (review: a stale 1-thread figure won)."""
    measured = now()
    fields = ("provider", "batch", "p50_ms", "p90_ms", "p99_ms", "mean_ms", "session_ms", "first_ms", "throughput",
              "runs", "rounds", "threads")
    entries: list[tuple[str, dict]] = []  # (variant name or "pytorch", latency entry)
    for row in rows:
        entry = {k: row[k] for k in fields}
        entry.update(machine=_machine(row["provider"], device_id), measured=measured, source=source)
        if inputs:  # inspect and report say what was timed: a decode step's items/s are tokens/s
            entry["inputs"] = inputs
        if row["peak_rss_mb"] is not None:
            entry["peak_rss_mb"] = row["peak_rss_mb"]
        entries.append(("pytorch" if row["engine"] == "pytorch" else row["variant"], entry))

    timed = {name: info.get("sha256") for name, info in pkg.variants.items()}  # the files as they were timed
    replaced: list[str] = []

    def merge(m: dict) -> dict:
        variants = {k: dict(v) for k, v in m["variants"].items()}
        reference = dict(m.get("reference") or {"engine": "pytorch eager"})
        replaced.clear()
        for name in dict.fromkeys(n for n, _ in entries):
            target = reference if name == "pytorch" else variants.get(name)
            if target is None:  # a variant removed meanwhile keeps no figures
                continue
            if name != "pytorch" and target.get("sha256") != timed.get(name):  # another writer replaced it while it was
                replaced.append(name)  # timed: the old file's figures would rank the new one (review)
                continue
            new = {latency_key(e): e for n, e in entries if n == name}
            where = {(e["provider"], e["machine"], e["batch"]) for e in new.values()}
            kept = {k: e for k, e in target.get("latency", {}).items() if (e["provider"], e.get("machine"), e.get("batch", 1)) not in where}
            target["latency"] = {**kept, **new}
        return {**m, "variants": variants, **({"reference": reference} if any(n == "pytorch" for n, _ in entries) else {})}

    pkg.edit(merge)
    if replaced:
        import warnings

        from .errors import EdgeAIWarning, user_level

        one = len(replaced) == 1
        warnings.warn(EdgeAIWarning(f"{' and '.join(replaced)} {'was' if one else 'were'} replaced in {pkg.path} while being timed, "
                                    f"so {'its' if one else 'their'} figures were not recorded; time {'it' if one else 'them'} "
                                    "again with edgeai bench --record"), stacklevel=user_level())


TAIL_OVER_MEDIAN, ROUNDS_APART = 10.0, 1.5  # past these a row's calls did not run alike: neighbours, not the model
TAIL_MS = 3.0  # ...but a p99 within 3 ms of p50 is one preemption (a timeslice), not a busy machine (0.02 ms models)
# ...and round medians within a quarter of a millisecond are caches and clocks, not neighbours: a
# review saw "round medians 2.0x apart" after every export of 0.03-0.1 ms models on a quiet machine
ROUNDS_MS = 0.25


def unsteady(rows: list[dict]) -> str | None:
    """Which rows' figures look disturbed: p99 over 10x p50 (and 3 ms more), or round medians 1.5x
    apart (and 0.25 ms)."""
    said = []
    for r in rows:
        name, rounds = "PyTorch" if r["engine"] == "pytorch" else r["variant"], [x for x in r.get("p50_by_round_ms") or [] if x]
        name += f" batch {r['batch']}" + (f" on {r['threads']} thread{'s' if r['threads'] > 1 else ''}" if r.get("threads") else "")
        if r["p50_ms"] and r["p99_ms"] and r["p99_ms"] > max(TAIL_OVER_MEDIAN * r["p50_ms"], r["p50_ms"] + TAIL_MS):
            said.append(f"{name}: p99 {r['p99_ms'] / r['p50_ms']:.0f}x p50")
        elif len(rounds) > 1 and max(rounds) > max(ROUNDS_APART * min(rounds), min(rounds) + ROUNDS_MS):
            said.append(f"{name}: round medians {max(rounds) / min(rounds):.1f}x apart")
    return "; ".join(said[:3]) + (f"; {len(said) - 3} more" if len(said) > 3 else "") if said else None
