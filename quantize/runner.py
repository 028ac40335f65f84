"""What every optimize/quantize step shares, done once (in the spirit of onnx-ir passes:
``requires`` -> ``run`` -> the runner's agreement check before anything is recorded).

A :class:`Step` only turns a source graph into a new one and describes how (its *recipe*).
:func:`run_step` does the rest: clears the debris of killed runs, writes the new graph to a
temporary file marked with this process id (so a concurrent cleaner leaves it alone), gives the
step a scratch directory, measures the result against fp32 on held-out inputs, adds the variant
(the file first, the manifest last, atomically: ``Package.add_variant``), optionally times every
variant, and removes whatever is left over, whether it succeeded or not.
"""

from __future__ import annotations

import functools
import os
import shutil
import tempfile
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np

from edgeai.data import compare as measure
from edgeai.data.feeds import batch_axis, held_out_inputs, input_kind
from edgeai.errors import EdgeAIError, EdgeAIWarning, ExportError, InputError, PackageError, UnsteadyTimingWarning, shell_arg, short_of_space, user_level
from edgeai.atomic import no_space, read_manifest
from edgeai.package import _TMP_MARK, Package, remove_stale_files
from edgeai.pipeline import open_package as open_named
from edgeai.rows import per_row, run_rows

Progress = Callable[[str], None]

# What the agreement check says while it runs, per variant (the CLI prints it as a stage).
CHECKS = {
    "optimized": "checking the optimized graph against fp32 on held-out inputs",
    "int8": "measuring INT8 agreement with fp32 on held-out inputs",
    "int4": "measuring int4 agreement with fp32 on held-out inputs",
}


@dataclass
class Context:
    """What the caller asked for, beyond the package: the options a step may read."""

    progress: Progress | None = None
    held_out: list[str] | None = None  # texts accuracy is recorded on (default: the built-in held-out set)
    tuning: list[str] | None = None  # texts a search may look at (default: the built-in tuning set)
    calibration: str | os.PathLike | None = None
    per_channel: bool = True
    made_from: str | None = None
    qat_steps: int = 300  # --method qat: fine-tuning steps
    calibrate: str = "minmax"  # static INT8's calibrator (--calibrate): minmax or percentile
    replace: bool = False  # replace a variant within budget by a new one that misses it (--replace)
    # --budget: the budget the new variant is made and judged under, written with it (not before:
    # a refused or failed command leaves the package's budget as it was). None: the package's.
    budget: dict | None = None

    def budget_of(self, pkg: Package) -> dict | None:
        return self.budget if self.budget is not None else pkg.manifest.get("budget")

    def say(self, msg: str) -> None:
        if self.progress:
            self.progress(msg)


class Step:
    """One recipe: ``requires`` says whether it applies, ``run`` writes the new graph to ``dest``.

    Subclasses set ``name`` and ``variant`` (the variant they add), and may override ``source``
    (the variant they start from) and ``simulate_qdq`` (measure Q/DQ as an int32-accumulating
    engine computes it, instead of through ONNX Runtime's fused CPU kernels).
    """

    name: ClassVar[str]
    variant: ClassVar[str]
    simulate_qdq: ClassVar[bool] = False

    def requires(self, pkg: Package) -> None:
        """Raise an InputError (one sentence) when ``pkg`` lacks what this step needs."""

    def applies(self, pkg: Package) -> bool:
        try:
            self.requires(pkg)
        except InputError:
            return False
        return True

    def source(self, pkg: Package, ctx: Context) -> str:
        """The variant the new graph is made from (recorded as its ``made_from``)."""
        return "fp32"

    def run(self, pkg: Package, src: Path, dest: Path, work: Path, ctx: Context) -> dict:
        """Write the new graph to ``dest`` (``work`` is scratch space); return its recipe (with
        ``made_from`` when the step chose a source other than ``source()``'s)."""
        raise NotImplementedError


@contextmanager
def opened(x: str | os.PathLike | Package, out: str | os.PathLike | None = None,
           arrays: str | os.PathLike | None = None) -> Iterator[Package]:
    """:func:`open_package` for one command: a package it wraps from a plain ``.onnx`` file here
    is removed again when the command fails or is refused while the package is still as wrapped
    (fp32 alone), so that a refused command writes nothing (review: a refused ``quantize
    FILE.onnx --budget 5`` left a new package folder). Once a variant has landed, it stays."""
    onnx_file = not isinstance(x, Package) and Path(x).suffix == ".onnx" and not Path(x).is_dir()
    target = (Path(out) if out else Path(x).with_suffix("")).absolute() if onnx_file else None
    new = target is not None and not target.exists()
    pkg = open_package(x, out, arrays)
    if not isinstance(x, Package):  # a nested one (quantize's to_fp16) keeps the outer one's (review: fp16 said "unchanged")
        pkg.wrapped_here = new and pkg.path.absolute() == target  # a failed step's sentence: "nothing was written"
    try:
        yield pkg
    except BaseException:
        if new and pkg.path.absolute() == target:
            with pkg.locked():  # not under a writer that reused this wrap (quantize/wrap.py) meanwhile
                if set((read_manifest(pkg.path) or {}).get("variants", ["?"])) == {"fp32"}:
                    shutil.rmtree(pkg.path, ignore_errors=True)
        raise


def open_package(x: str | os.PathLike | Package, out: str | os.PathLike | None = None,
                 arrays: str | os.PathLike | None = None) -> Package:
    """A package, a plain ``.onnx`` file wrapped into one at ``out`` (default: beside it; sized by
    ``arrays``, a folder of its feeds, see :func:`wrap_onnx`), or a
    built-in name that is not a path here (``edgeai quantize bert``): its cached package, built on
    first use, as ``edgeai run --model bert`` loads it."""
    if isinstance(x, Package):
        return x
    if Path(x).suffix == ".onnx" and not Path(x).is_dir():
        if not Path(x).is_file():
            raise PackageError(f"No ONNX file at {x}: the path does not exist.")
        from .wrap import wrap_onnx

        return wrap_onnx(x, out, arrays)
    if out is not None:  # review: `quantize PKG -o DIR` updated PKG in place and never said so
        raise InputError(f"-o/--output names the package a plain .onnx file is wrapped into; {x} is a package, "
                         "which is updated in place: leave -o out.")
    return open_named(os.fspath(x))  # what `edgeai run --model` accepts, with the same errors


def run_step(step: Step, pkg: Package, ctx: Context, measure_latency: bool = False) -> Package:
    """Run ``step`` on ``pkg`` and record the variant it makes, with its agreement with fp32."""
    step.requires(pkg)
    remove_stale_files(pkg.path)
    after = _family_evaluation(pkg, ctx) if ctx.held_out is None else None
    made_from = step.source(pkg, ctx)
    src = pkg.variant_path(made_from)
    tmp = pkg.path / f"model.{step.variant}{_TMP_MARK}{os.getpid()}.onnx"
    try:
        with tempfile.TemporaryDirectory(prefix="edgeai-quant-") as work:
            try:
                recipe = step.run(pkg, src, tmp, Path(work), ctx)
            except (EdgeAIError, KeyboardInterrupt, MemoryError):
                raise
            except Exception as e:  # the quantizer or optimizer of ONNX Runtime failing on this graph: one sentence
                text = (str(e).strip().splitlines() or [""])[0][:300].rstrip(".")
                # an export's package is still in its staging folder: the failed export writes nothing
                kept = "nothing was written" if _TMP_MARK in pkg.path.name or getattr(pkg, "wrapped_here", False) \
                    else "the package is unchanged"
                why = f"{type(e).__name__}: {text}"
                tmp.unlink(missing_ok=True)  # its part-written bytes are not the disk's to count
                if _as_a_full_disk(e) and (full := short_of_space(_graph_bytes(src), pkg.path, Path(work).parent)):  # review: a full disk said only "Protobuf serialization failed"
                    why = f"{full}; {why}"
                raise ExportError(f"The {step.name} step failed on {pkg.name}'s {made_from} graph: {why} ({kept}).") from None
        # A step that chose among sources by measurement (budget_search.py) says which.
        made_from = recipe.pop("made_from", made_from)
        ctx.say(CHECKS.get(step.variant, f"measuring {step.variant} agreement with fp32 on held-out inputs"))
        fp32 = pkg.variant_path("fp32")  # not src: a search may start from optimized and keep the plain graph (review)
        held_out, feeds = held_out_inputs(pkg, texts=ctx.held_out, arrays=ctx.calibration, calibrated="calibration" in recipe)
        # measured as the runtime runs it: a dynamic INT8 variant one row per call (edgeai.rows)
        axes = per_row(pkg.manifest, {"recipe": recipe}) if input_kind(pkg) != "text" else None  # texts: one per feed already
        axes = (axes[0], dict.fromkeys(axes[1], 0)) if axes else None  # cpu_runner gives outputs batch first
        agreement, held_out = _agreement(pkg, fp32, tmp, feeds, step.simulate_qdq, held_out, axes)
        agreement["accuracy"]["held_out"] = held_out  # which set: edgeai.data.feeds.held_out_inputs
        # checked under the package's lock, on the manifest as it is then: another quantize may have landed one
        keep = None if ctx.replace else functools.partial(_keep_a_better_variant, pkg, step, recipe, agreement["accuracy"], ctx.budget)
        pkg.add_variant(step.variant, tmp, {"made_from": made_from, "recipe": recipe, **agreement},
                        {"budget": ctx.budget} if ctx.budget is not None else None, check=keep)
    finally:
        tmp.unlink(missing_ok=True)
    if measure_latency:
        try:
            record_latencies(pkg, progress=ctx.progress, source="optimize" if step.variant == "optimized" else "quantize")
        except KeyboardInterrupt:  # the variant has landed: say what auto does without its figures
            warnings.warn(EdgeAIWarning(
                f"the {step.variant} variant was added to {pkg.path} but not timed; until `edgeai bench "
                f"{shell_arg(pkg.path)} --record` times it, auto runs the default order"), stacklevel=user_level())
            raise
    if after is not None:
        ctx.say("measuring every variant's accuracy on the package's own test split")
        after(pkg)
    return pkg


def _as_a_full_disk(e: Exception) -> bool:
    """Whether ``e`` is how a full disk shows: its OSError, or ONNX Runtime's and onnx's reading of a part-written
    graph. Any other failure is the step's, however little room is left (review: a failed conversion blamed the disk)."""
    if isinstance(e, OSError) and e.errno is not None:
        return no_space(e) is not None
    return any(s in str(e) for s in ("Protobuf serialization failed", "Wire format was corrupt", "Protobuf parsing failed"))


def _graph_bytes(src: Path) -> int:
    """About what a step writes at most: its source graph with the external data beside it."""
    return sum(f.stat().st_size for f in src.parent.glob(f"{src.name}*") if f.is_file())


def _family_evaluation(pkg: Package, ctx: Context) -> Callable[[Package], None] | None:
    """Where the package's family rebuilds the held-out set its export measured on (the LSTM's
    test split), use it here too (into ``ctx``) rather than the generic sentences, and return
    what records the family's own figures afterwards (test accuracy)."""
    from edgeai import families

    fam = families.families().get(pkg.manifest.get("family", ""))
    if fam is None or not fam.has_hook("evaluation") or (found := fam.hook("evaluation")(pkg)) is None:
        return None
    ctx.held_out, tuning, after = found
    ctx.tuning = ctx.tuning if ctx.tuning is not None else tuning
    return after


def _keep_a_better_variant(pkg: Package, step: Step, recipe: dict, accuracy: dict, budget: dict | None, manifest: dict) -> None:
    """An InputError, before the manifest is written, when the new variant misses the package's
    budget (``budget``, else the manifest's) and the one it would replace (intact) meets it:
    re-quantizing a text model with ``--method static`` (cosine min 0.22 on MiniLM) would otherwise
    delete a dynamic INT8 at 0.99 that took minutes to search for."""
    from edgeai.errors import PackageError

    budget = budget if budget is not None else manifest.get("budget")
    old = manifest["variants"].get(step.variant)
    missed = measure.missed_floors(budget, accuracy)
    if not old or not missed:
        return
    old_missed = measure.missed_floors(budget, old.get("accuracy", {}))
    # both miss: keep the old one only where the new one is further from every floor it misses
    # (a dynamic INT8 of a CNN at 0.66 would otherwise silently replace a static one at 0.89)
    if old_missed and not all(float(accuracy.get(k, float("nan"))) < float(old.get("accuracy", {}).get(k, float("-inf")))
                              for k in missed):
        return
    try:
        pkg.verified_file(old["file"], old["sha256"])
    except PackageError:
        return  # a damaged variant is always replaced
    new_kind = " ".join(x for x in (recipe.get("method"), recipe.get("preset")) if x) or step.name
    if old_missed:
        shown = ", ".join(f"{k} {accuracy.get(k, float('nan')):.6g} < {old['accuracy'][k]:.6g}" for k in missed)
        raise InputError(f"The new {step.variant} ({new_kind}) is less accurate than the one already in {pkg.path} "
                         f"({shown}; neither meets the budget), so that one is kept; give --replace to replace it anyway.")
    missed = ", ".join(f"{k} {measure.short_of(accuracy.get(k, float('nan')), v)} < {v:.10g}" for k, v in missed.items())
    old_kind = (old.get("recipe") or {}).get("method") or "existing"
    raise InputError(f"The new {step.variant} ({new_kind}) misses the accuracy budget ({missed}), so the {old_kind} "
                     f"{step.variant} already in {pkg.path}, which meets it, is kept; give --replace to replace it anyway.")


# -- running variants on CPU -----------------------------------------------------------------
def cpu_runner(pkg: Package, path: Path, simulate_qdq: bool = False) -> Callable[[dict], dict]:
    """``feed -> {output name: array}`` for a graph of ``pkg`` on ONNX Runtime's CPU provider,
    each output's batch axis first: accuracy figures compare rows as samples, and a
    sequence-first output (``[seq, batch, features]``) would otherwise be compared step by step."""
    run, first = _cpu_runner(pkg, path, simulate_qdq), batch_first(pkg)
    return lambda feed: first(run(feed))


def batch_first(pkg: Package) -> Callable[[dict], dict]:
    """``{output name: array} -> same``, each output of ``pkg`` with its batch axis moved first."""
    axes = {o["name"]: batch_axis(o.get("shape")) for o in pkg.manifest["outputs"]}
    if not any(axes.values()):
        return lambda out: out
    return lambda out: {k: np.moveaxis(v, axes[k], 0) if axes.get(k) and v.ndim > axes[k] else v for k, v in out.items()}


def _cpu_runner(pkg: Package, path: Path, simulate_qdq: bool) -> Callable[[dict], dict]:
    from edgeai.session import Session

    m = pkg.manifest
    if simulate_qdq:
        # Q/DQ pairs run as written (quantize, dequantize, float op) instead of being fused into
        # ONNX Runtime's int8 CPU kernels: the arithmetic of an engine that accumulates in int32,
        # like TensorRT's. Measured on EfficientNet-Lite0's symmetric QDQ: 0.978 top-1 agreement
        # simulated vs 0.548 through the fused s8s8 AVX2 kernels, which saturate int16.
        import onnxruntime as ort

        from edgeai.session import session_options

        so = session_options()
        so.add_session_config_entry("session.disable_quant_qdq", "1")
        session = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
        names = [o["name"] for o in m["outputs"]]
        return lambda feed: dict(zip(names, session.run(names, feed)))
    return Session(path, m["inputs"], m["outputs"], provider="cpu").run


def _agreement(pkg: Package, reference: Path, candidate: Path, feeds, simulate_qdq: bool = False,
               held_out: str = "seeded-noise", axes=None) -> tuple[dict[str, dict], str]:
    """``accuracy`` (the worst figures) and ``accuracy_details`` (per output) of a new variant,
    and the held-out set they were measured on; with ``axes`` (edgeai.rows.per_row) the variant
    runs one row per call, as the runtime runs it."""
    from edgeai.data.feeds import next_tokens

    ref = measure.run_batches(cpu_runner(pkg, reference), feeds)
    if not _finite(pkg, ref) and held_out == "seeded-noise":
        # Normal noise under a log or a sqrt (features that are never negative): fp32 itself was
        # NaN there, and every variant scored "cosine -1" (review). Its magnitudes are tried next.
        feeds = [{k: np.abs(v) if v.dtype.kind == "f" else v for k, v in feed.items()} for feed in feeds]
        held_out, ref = "seeded-noise-nonnegative", measure.run_batches(cpu_runner(pkg, reference), feeds)
    if not _finite(pkg, ref):
        where = {"calibration-arrays": "the given arrays", "held-out-arrays": "the given arrays held out from calibration",
                 "seeded-noise-nonnegative": "seeded noise, negative or not"}
        hint = ("; `edgeai quantize` takes arrays of what it is fed as its held-out inputs: --calibration DIR of .npy/.npz files"
                if held_out.startswith("seeded-noise") else "")
        raise InputError(f"{pkg.name}'s fp32 gives NaN or infinite outputs on {where.get(held_out, 'its held-out inputs (' + held_out + ')')}, "
                         f"so no variant's agreement with it can be measured there{hint}.")
    run = cpu_runner(pkg, candidate, simulate_qdq)
    out = measure.run_batches((lambda feed: run_rows(run, feed, axes)) if axes else run, feeds)
    targets = next_tokens(feeds) if "generation" in pkg.manifest else None  # generation: perplexity too
    figures = measure.compare(ref, out, pkg.task, pkg.labels, targets)  # samples: rows, or real tokens for token classification
    return {"accuracy": figures, "accuracy_details": {"vs": "fp32", "outputs": measure.per_output(ref, out)}}, held_out


def _finite(pkg: Package, outputs: dict[str, np.ndarray]) -> bool:
    """Whether fp32's outputs are all finite (text outputs of different lengths are NaN-padded by
    stack: only other kinds are checked)."""
    return input_kind(pkg) not in ("tensor", "image") or all(np.isfinite(v).all() for v in outputs.values() if v.dtype.kind == "f")


def record_latencies(pkg: Package, batch: int = 1, threads: int | None = None, progress: Progress | None = None,
                     source: str = "quantize", final: Path | None = None) -> None:
    """Time every variant on this CPU (a fresh process each, alternating rounds) and record it
    under ``source``, the command that asked (quantize, optimize or export). ``final``: where the
    package will be, for the warning on unsteady figures (an export times it in its staging folder)."""
    from edgeai.benchmark import bench

    def step(done: int, total: int, label: str) -> None:
        if progress:
            progress(f"timing every variant on this CPU, a fresh process each ({done}/{total})")

    # With no thread count, a model quick enough is timed on one thread too (edgeai._records).
    doc = bench(pkg, providers="cpu", batches=(batch,), threads=threads, min_time=0.5, record=True, on_step=step, source=source)
    if said := doc["unsteady"]:
        warnings.warn(UnsteadyTimingWarning(
            f"the latencies just recorded are unsteady ({said}): the machine was likely busy, and auto chooses a "
            f"variant by them; time them again on a quiet machine with: edgeai bench {shell_arg(final or pkg.path)} --record"), stacklevel=user_level())
