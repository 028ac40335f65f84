"""Variant choice (DESIGN.md, Contracts): the fastest variant within the accuracy budget, by the
latencies recorded on this kind of machine for the provider in use; a default order otherwise."""

from __future__ import annotations

from typing import TYPE_CHECKING

from . import providers
from .errors import InputError, shell_arg
from .machine import default_threads, machine_key, usable_cpus
from .package import VARIANTS, Package

if TYPE_CHECKING:
    from .session import Session


def meets_budget(pkg: Package, name: str) -> bool:
    """fp32 is the reference; other variants need a recorded figure that meets the budget."""
    from .data.compare import budget_met

    return name == "fp32" or budget_met(pkg.manifest.get("budget"), pkg.variants[name].get("accuracy", {}))


def fastest_recorded(info: dict, provider: str, machine: str | None = None, batch: int = 1,
                     device_id: int = 0, threads: int | None = None) -> dict | None:
    """A variant's fastest latency entry for this provider, kind of machine (and GPU) and batch
    size, whatever thread count it was measured on, or with ``threads``, on that many CPU threads
    (an entry of ONNX Runtime's default counts as one thread per physical core); None without one."""
    machine = machine or machine_key(provider, device_id)
    entries = [e for e in info.get("latency", {}).values()
               if e["provider"] == provider and e.get("machine", "?") == machine and e.get("batch", 1) == batch]
    if threads is not None and provider == providers.CPU:
        entries = [e for e in entries if (e.get("threads") or default_threads()) == threads]
    return min(entries, key=lambda e: e["p50_ms"]) if entries else None


def fixed_batch(pkg: Package) -> int | None:
    """The size every input fixes its batch axis to (a module traced at [2, 64] without --dynamic;
    the axis named batch, else the first), None where one is free or they differ."""
    from .data.feeds import batch_axis

    sizes = {i["shape"][batch_axis(i["shape"])] if i.get("shape") else None for i in pkg.manifest["inputs"]}
    return sizes.pop() if len(sizes) == 1 and isinstance(next(iter(sizes)), int) else None


def call_batch(pkg: Package) -> int:
    """The batch of one call, which figures are recorded and looked up under: a fixed batch's size,
    else 1 (a fixed batch of 2 was labelled batch 1, and its items/s counted 2; review)."""
    return fixed_batch(pkg) or 1


def recorded_latency(info: dict, provider: str, machine: str | None = None, batch: int = 1,
                     device_id: int = 0, threads: int | None = None) -> float | None:
    """The recorded p50 of a variant for this provider, kind of machine (and GPU) and batch size."""
    best = fastest_recorded(info, provider, machine, batch, device_id, threads)
    return best["p50_ms"] if best else None


def expected_provider(provider: str = "auto", strict: bool | None = None) -> str:
    """The first provider of ``provider`` that can start here (the CPU when none can)."""
    return next((p for p in providers.candidates(provider, strict is not False)
                 if providers.unavailable_reason(p) is None), providers.CPU)


def resolve_threads(pkg: Package, variant: str, provider: str = "auto", strict: bool | None = None,
                    device_id: int = 0, threads: int | None = None) -> tuple[int | None, str]:
    """CPU threads for a pipeline, and a note for its variant reason: ``threads`` when given,
    else those of the variant's fastest figure recorded on this CPU (None: ONNX Runtime's
    default). A model of a millisecond runs faster on one thread than on two, whose hand-off
    costs more than the work it splits (a record times both for such models: edgeai/_records.py)."""
    check_threads(threads)
    if threads is not None or expected_provider(provider, strict) != providers.CPU:
        return (None if threads is None else int(threads)), ""  # a numpy integer too
    best = (fastest_recorded(pkg.variants[variant], providers.CPU, batch=call_batch(pkg), device_id=device_id) or {}).get("threads")
    return best, (f"; {best} thread{'s' if best > 1 else ''}, the fastest recorded" if best else "")


def check_threads(threads: object) -> None:
    """``threads`` is None (the default) or a whole number of at least 1, or one InputError."""
    import operator

    try:
        count = None if threads is None or isinstance(threads, bool) else operator.index(threads)  # int, numpy integers
    except TypeError:
        count = None
    if threads is not None and (count is None or count < 1):
        raise InputError(f"threads is a number of CPU threads, at least 1 (or None for the default); got {threads!r}.")
    # ONNX Runtime starts every thread asked for: 10000 took minutes to start and would not stop
    cpus = usable_cpus()
    if count is not None and count > (most := max(64, 4 * cpus)):
        raise InputError(f"threads={count} is more than this machine can use: it has {cpus} CPUs (at most {most} threads "
                         "are taken; beyond its CPUs they only wait for each other).")


LOSSY = ("int8", "fp16", "int4")
LOSSY_MARGIN = 0.05  # run-to-run noise of the recorded medians on a shared 2-core machine is ~5%


def for_provider(pkg: Package, name: str, provider: str) -> bool:
    """An int8 made for TensorRT (symmetric QDQ, accuracy measured as TensorRT computes) is
    chosen only on TensorRT: ONNX Runtime's CPU kernels compute it differently (see quantize)."""
    recipe = pkg.variants[name].get("recipe") or {}
    return recipe.get("preset", "cpu") != "tensorrt" or provider == providers.TENSORRT


def choose_variant(pkg: Package, provider: str, device_id: int = 0, threads: int | None = None) -> tuple[str, str]:
    """Contracts, variant choice: the fastest variant within budget, measured on this kind of
    machine (on ``threads`` CPU threads where the caller fixed them and such figures exist)."""
    v, why = _choose(pkg, provider, device_id, threads)
    # a TensorRT-made int8 left out here, however fast its figure: "fastest" would otherwise read as of all (review)
    return v, why + "".join(f"; {w} is made for TensorRT and runs only there" for w in pkg.variants if not for_provider(pkg, w, provider))


def _choose(pkg: Package, provider: str, device_id: int, threads: int | None) -> tuple[str, str]:
    eligible = [v for v in VARIANTS if v in pkg.variants and meets_budget(pkg, v) and for_provider(pkg, v, provider)]
    batch = call_batch(pkg)

    def fastest(threads: int | None) -> dict:
        return {v: e for v in eligible if (e := fastest_recorded(pkg.variants[v], provider, batch=batch, device_id=device_id, threads=threads))}

    # Threads fixed by the caller: the figures of that count rank the variants, where every one has them
    best = fastest(threads) if threads is not None and provider == providers.CPU else {}
    fixed = bool(best) and len(best) == len(eligible)
    best = best if fixed else fastest(None)
    timed = [(e["p50_ms"], v) for v, e in best.items()]
    # A variant within budget but not timed here (its timing interrupted, or skipped) cannot be ranked.
    untimed = [v for v in eligible if v not in {w for _, w in timed}]
    if timed and not untimed:
        fastest = min(t for t, _ in timed)
        # A reduced-precision variant has to be measurably faster to be worth its accuracy cost:
        # within LOSSY_MARGIN of the fastest, the exact variants (fp32, optimized) win.
        t, v = min(timed, key=lambda tv: (tv[0] > fastest * (1 + LOSSY_MARGIN), tv[1] in LOSSY, tv[0]))
        why = "fastest within the accuracy budget on this machine" if pkg.manifest.get("budget") else "fastest on this machine"
        if t > fastest:
            why = f"exact, and within {LOSSY_MARGIN:.0%} of the fastest{' within budget' if pkg.manifest.get('budget') else ''}"
        # Faster variants that the budget rules out: say so, or "fastest" reads as the fastest of all.
        missed = [w for w in VARIANTS if w in pkg.variants and w not in eligible and for_provider(pkg, w, provider)
                  and (r := recorded_latency(pkg.variants[w], provider, batch=batch, device_id=device_id, threads=threads if fixed else None))
                  is not None and r < t]
        but = f"; {' and '.join(missed)} {'is' if len(missed) == 1 else 'are'} faster but miss{'es' if len(missed) == 1 else ''} the budget" if missed else ""
        on = best[v].get("threads") or default_threads()  # threads fixed by the caller, but not every variant timed so: say so
        on = (f" on {on} thread{'s' if on > 1 else ''}; not every variant was timed on {threads}"
              if threads is not None and not fixed and provider == providers.CPU else "")
        none = "" if pkg.manifest.get("budget") else "; the package sets no accuracy budget"  # not "within" one (review)
        return v, f"{why} ({t:.2f} ms recorded{on}{but}){none}"
    order = ("int8", "optimized", "fp32") if provider == providers.CPU else ("fp16", "fp32", "optimized")
    if provider == providers.TENSORRT and (pkg.variants.get("int8", {}).get("recipe") or {}).get("preset") == "tensorrt":
        order = ("int8", *order)
    here = machine_key(provider, device_id)  # figures of this machine at another batch size are not another CPU's (review)
    elsewhere = [] if timed else sorted({e.get("machine", "?") for v in eligible for e in pkg.variants[v].get("latency", {}).values()
                                         if e["provider"] == provider and e.get("machine", "?") != here})
    for v in order:
        if v in eligible:
            if elsewhere:  # figures of another CPU say nothing about this one (machine.py)
                return v, (f"the latencies in this package were measured on another CPU ({elsewhere[0]}), not this one "
                           f"({here}); default order {'/'.join(order)} until "
                           f"`edgeai bench {shell_arg(pkg.path)} --record` measures them here")
            if timed:
                return v, (f"{' and '.join(untimed)} {'has' if len(untimed) == 1 else 'have'} no latency recorded on this machine, "
                           f"so the figures cannot rank the variants; default order {'/'.join(order)} until "
                           f"`edgeai bench {shell_arg(pkg.path)} --record` measures them here")
            batches = any(e["provider"] == provider for w in eligible for e in pkg.variants[w].get("latency", {}).values())
            return v, (f"no latency recorded for {providers.short_name(provider)} on this machine"
                       f"{f' at batch {batch} (only other batch sizes were timed)' if batches else ''}; default order {'/'.join(order)}")
    return "fp32", "the reference variant"


def resolve_variant(pkg: Package, provider: str = "auto", variant: str = "auto", strict: bool | None = None,
                    device_id: int = 0, threads: int | None = None) -> tuple[str, str]:
    """The variant a pipeline loads and why: a named one (checked), or the choice for the first
    provider of ``provider`` that can start here (and the CPU threads the caller fixed, if any)."""
    check_threads(threads)
    if variant != "auto":
        pkg.variant(variant)  # raises a clear error for a variant the package lacks
        if not meets_budget(pkg, variant):
            return variant, "requested; it misses the package's accuracy budget, so auto would not run it"
        return variant, "requested"
    return choose_variant(pkg, expected_provider(provider, strict), device_id, threads)


def start(pkg: Package, provider: str = "auto", variant: str = "auto", strict: bool | None = None,
          threads: int | None = None, device_id: int = 0) -> tuple[str, str, int | None, "Session"]:
    """A pipeline's variant, the reason for it, its CPU threads, and a session running them. Where
    the provider chosen for falls back while starting (a GPU session that would not start), the
    choice is made again for the one that runs: a GPU's default order ran on the CPU, and a
    TensorRT-only int8 on CUDA (review)."""
    chosen = _start(pkg, provider, variant, strict, threads, device_id)
    ran = chosen[3].provider
    if variant != "auto" or ran == expected_provider(provider, strict):
        return chosen
    again = _start(pkg, ran, variant, True, threads, device_id, chosen)
    if again[3] is not chosen[3]:  # the new session says why the provider asked for did not run
        again[3].choice.requested, again[3].choice.notes = chosen[3].choice.requested, chosen[3].choice.notes
    return again[0], f"{again[1]}; chosen for {providers.short_name(ran)}, which runs it", again[2], again[3]


def _start(pkg: Package, provider: str, variant: str, strict: bool | None, threads: int | None, device_id: int,
           started: tuple | None = None) -> tuple[str, str, int | None, "Session"]:
    """The variant and threads chosen for ``provider`` and a session of them: ``started``'s own,
    where it already runs them (a model is not opened twice)."""
    from .session import Session

    variant, why = resolve_variant(pkg, provider, variant, strict, device_id, threads)
    threads, note = resolve_threads(pkg, variant, provider, strict, device_id, threads)  # None: ORT's default
    if started is not None and started[0] == variant and started[2] == threads:
        return variant, why + note, threads, started[3]
    info = pkg.variants[variant]
    session = Session(pkg.variant_path(variant), pkg.manifest["inputs"], pkg.manifest["outputs"], provider, strict, threads,
                      device_id, model_sha256=info["sha256"], tensorrt=providers.tensorrt_flags(variant, info),
                      spin="generation" in pkg.manifest)  # a decoder's steps run back to back: its pool spins
    if started is not None:
        started[3].close()
    return variant, why + note, threads, session
