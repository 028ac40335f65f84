"""``edgeai export``, ``optimize``, ``quantize``: the stages that write packages."""

from __future__ import annotations

import dataclasses
import inspect
import typing
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer

from edgeai.errors import DependencyError, InputError, shell_arg

from ._common import Stages, choice_enum, lazy_command, out, single_command, size_text
from ._plain import note, warn


def _export_module():
    try:
        import edgeai.export as export
        import torch  # noqa: F401  (fail here, with the fix, rather than mid-export)
    except ImportError as e:
        raise DependencyError(f"edgeai export needs the export extra ({e.name} is missing): pip install 'edgeai[export]'.") from None
    return export


def budget_note(pkg, name: str, acc: dict) -> str:
    """For a variant auto will not choose because it misses the package's budget, why."""
    from edgeai.data.compare import missed_floors, short_of

    missed = missed_floors(pkg.manifest.get("budget"), acc)
    if name == "fp32" or not missed:  # fp32 is the reference: always eligible
        return ""
    rule = " and ".join(f"{k} >= {v:.10g} (has {short_of(acc[k], v)})" if isinstance(acc.get(k), float) else f"{k} >= {v:.10g}"
                        for k, v in missed.items())
    hint = ""
    recipe = pkg.variants.get(name, {}).get("recipe", {})
    if recipe.get("method") == "static":
        from edgeai.quantize.steps.qat import QuantizationAware

        if QuantizationAware().applies(pkg):
            hint = f"; `edgeai quantize {shell_arg(pkg.path)} --method qat` fine-tunes the weights for INT8 (minutes)"
    return f" \N{EM DASH} misses the budget {rule}, so auto will not choose it{hint}"


def _said_after(others: bool = True):
    """edgeai.errors.said_after, each warning a ``warning:`` line."""
    from edgeai.errors import said_after

    return said_after(warn, others)


def _verb(package: str, output: Path | None) -> str:
    """"wrote" for the package a plain .onnx file is wrapped into here, "updated" for one that was
    there (review: the first quantize of a file said "updated" of the package it had just made)."""
    if Path(package).suffix == ".onnx" and not Path(package).is_dir():
        target = output if output is not None else Path(package).with_suffix("")
        return "updated" if (target / "manifest.json").is_file() else "wrote"
    return "updated"


def _variants_line(pkg) -> str:
    parts = []
    for name, v in pkg.variants.items():
        acc = v.get("accuracy", {})
        fig = f", top-1 agreement {acc['top1_agreement']:.3f}" if "top1_agreement" in acc else ""
        if "test_accuracy" in acc:
            fig += f", test accuracy {acc['test_accuracy']:.3f} (majority baseline {acc['baseline_accuracy']:.3f})"
        if "cosine_min" in acc:
            fig = f", cosine min {acc['cosine_min']:.4f} / mean {acc['cosine_mean']:.4f}"
            if "closeness" in ((pkg.manifest.get("budget") or {}).get("also") or {}):  # the scale the cosine cannot see
                fig += f", closeness {acc['closeness']:.4f}" if "closeness" in acc else ""
        few = fig and name != "fp32" and 0 < acc.get("samples", 10) < 10  # e.g. one --calibration array: a figure to doubt
        recipe = v.get("recipe", {})
        method = recipe.get("method")
        where = {"seeded-noise": "seeded random inputs",  # what a figure is worth: no inputs of the user's kind
                 "seeded-noise-nonnegative": "seeded non-negative random inputs",
                 "calibration-arrays": "its own calibration arrays" if method == "static" else "",
                 "held-out-arrays": "arrays held out from calibration" if method == "static" else ""}.get(acc.get("held_out"), "")
        if few:  # "on only 8 seeded random inputs", not "on only 8 inputs on seeded random inputs" (review)
            many = ("of " + where) if where.startswith("its") else (where or "inputs")
            fig += f" on only {acc['samples']:.0f} {many if acc['samples'] != 1 else many.replace('inputs', 'input').replace('arrays', 'array')}"
        elif where and fig and name != "fp32":
            fig += f" on {where}"
        kind = f", {method} INT8{' for TensorRT' if recipe.get('preset') == 'tensorrt' else ''}" if method else ""
        if method == "dynamic":  # what the budget search did (quantize/steps/budget_search.py)
            smoothed = (recipe.get("smoothing") or {}).get("alpha")
            graph = {"fp32": "the plain graph", "optimized": "the fused graph"}.get(v.get("made_from") or "")
            kind += (f" of {graph}" if graph and len(recipe.get("int8_ms_by_graph") or {}) > 1 else "")  # chosen between two
            kind += (f", smoothed (alpha {smoothed:g})" if smoothed else "") + (", 7-bit weights" if "7-bit" in recipe.get("weights", "") else "")
        if method in ("dynamic", "static"):  # static: the stem conv (quantize/steps/static_qdq.py)
            kept = len(recipe.get("float_nodes") or [])
            kind += f", {kept} layer{'s' if kept > 1 else ''} kept float" if kept else ""
        if method == "weight-only":
            kind = f", 4-bit weight-only (block {recipe.get('block_size')})"
        if name == "fp32" and recipe.get("weights") == "float16":  # a half-precision .onnx wrapped as given, or module exported
            kind = ", float16 weights" + ("" if recipe.get("exporter") else " as given")
        parts.append(f"{name} ({size_text(v['size'])}{kind}{fig}{budget_note(pkg, name, acc)})")
    return "; ".join(parts)


EXPORT_HELP = "Export a model to a validated package: ONNX fp32, optimized and (by default) int8."
QUANTIZE_HELP = ("Add the 'int8' variant (or with --precision the 'fp16' one, or a text-generation package's 'int4'), "
                 "with its agreement with fp32 and its CPU latency recorded.")
# export's own precisions: int8 runs the whole chain, fp32 stops before quantization.
EXPORT_PRECISIONS = ("fp32", "int8")


def _is_factory(name: str) -> bool:
    return ":" in name and name.rpartition(":")[0].endswith(".py")


def export(name: Optional[str] = None, output: Optional[Path] = None, precision: Optional[Enum] = None,
           budget: Optional[float] = None, **options) -> None:
    """Export a model to a validated package: ONNX fp32, optimized and (by default) int8.

    NAME is a built-in model, or FILE.py:FACTORY for any torch.nn.Module a function returns
    (then --input is required and --precision defaults to fp32). Without NAME, --model
    DIR_OR_ID [--task TASK] exports any Hugging Face checkpoint with Optimum's exporter."""
    from edgeai import families

    given = _given_options(options)
    if name is None:
        if "model" not in given:
            raise InputError(f"Name a model to export ({families.names_line()}, or FILE.py:FACTORY), "
                             "or give --model DIR_OR_ID for a Hugging Face checkpoint.")
        name = "hf"
    export_mod = _export_module()
    factory_options = {o.name: o for o in families.get("custom").options}
    if _is_factory(name):
        stray = [o.flag for o, _ in _family_options() if o.name in given and o.name not in factory_options]
        if stray:
            verb = "applies" if len(stray) == 1 else "apply"
            hf = " and Hugging Face checkpoints" if "--model" in stray else ""
            raise InputError(f"{', '.join(stray)} {verb} to built-in models{hf}, not FILE.py:FACTORY exports: the factory "
                             "returns the module, with its weights loaded.")
    else:
        factory_only = [o for o in factory_options.values() if o.name not in _builtin_option_names()]
        flags = [o.flag for o in factory_only if o.name in given]
        if flags and name.endswith(".py"):  # FILE.py without :FACTORY: say what is missing, not that the flags do not apply
            raise InputError(f"{name} is a Python file: name the function that returns its module, {name}:FUNCTION "
                             "(e.g. samples/net.py:make_model).")
        if flags:
            listed = flags[0] if len(flags) == 1 else f"{', '.join(flags[:-1])} and {flags[-1]}"
            raise InputError(f"{listed} appl{'ies' if len(flags) == 1 else 'y'} to FILE.py:FACTORY exports, not to {name}.")
    before = _variants_in(output)
    with _said_after(others=False), Stages(f"exporting {given['model'] if name == 'hf' else name}") as stages:
        if _is_factory(name):
            pkg = export_mod.export_factory(name, inputs=given.pop("input", []), dynamic=given.pop("dynamic", None), out=output,
                                            precision=precision.value if precision else "fp32", progress=stages,
                                            name=given.pop("name_", None), budget=budget, **given)
        else:
            pkg = export_mod.export_model(name, output, precision=precision.value if precision else "int8", progress=stages,
                                          budget=budget, **given)
    out.print(f"wrote {pkg.path}: {_variants_line(pkg)}", markup=False)
    if gone := [v for v in before if v not in pkg.variants]:
        # an export makes a new package: what was added to the old one since is not carried over
        note(f"note: this export replaced the package that was there; its {', '.join(gone)} variant"
             f"{'s are' if len(gone) > 1 else ' is'} gone (edgeai quantize {shell_arg(pkg.path)} adds one again).")


def _variants_in(folder: Optional[Path]) -> list[str]:
    """The variants of the package of the same model at ``folder``, if one is there (what a new
    export replaces; another model's package is refused by the export)."""
    from edgeai.atomic import read_manifest

    return list((read_manifest(folder) or {}).get("variants", []))


def _builtin_option_names() -> set[str]:
    from edgeai import families

    return {o.name for f in families.builtin_models().values() for o in f.options}


def _given_options(options: dict) -> dict:
    """The family options the user gave (not left at their defaults), as plain values: the build
    hook of each family says which ones apply to it."""
    defaults = {o.name: o.default for o, _ in _family_options()}
    given = {}
    for key, value in options.items():
        value = [v.value if isinstance(v, Enum) else v for v in value] if isinstance(value, list) else value
        value = value.value if isinstance(value, Enum) else value
        if value not in (None, []) and value != defaults.get(key):
            given[key] = value
    return given


def _family_options() -> list[tuple]:
    """Every registered family's export options with their family, once each (the first family
    to name one owns its help line)."""
    from edgeai import families

    seen: dict[str, tuple] = {}
    for fam in families.families().values():
        for opt in fam.options:
            if opt.name in seen and seen[opt.name][0].choices != opt.choices:
                # Families that share an option but not its choices (bert's --task and hf's): the
                # CLI takes any value, and the family given it says in one sentence what it takes.
                first, owner = seen[opt.name]
                seen[opt.name] = (dataclasses.replace(first, choices=()), owner)
            seen.setdefault(opt.name, (opt, fam))
    return list(seen.values())


def _who(option: str) -> str:
    """Which exports take an option: ``bert only``, ``bert, or no NAME (Hugging Face)``..."""
    from edgeai import families

    takers = []
    for fam in families.families().values():
        if any(o.name == option for o in fam.options):
            takers.append(fam.model or ("no NAME (any Hugging Face checkpoint)" if fam.name == "hf" else "FILE.py:FACTORY"))
    return f"{takers[0]} only" if len(takers) == 1 else ", or ".join(takers)


def _option_parameter(opt, fam) -> inspect.Parameter:
    """An ``edgeai export`` option from a family's :class:`edgeai.families.Option`."""
    kind = choice_enum(opt.name.title().replace("_", ""), opt.choices) if opt.choices else opt.kind
    hint = Optional[list[kind]] if opt.multiple else (kind if opt.default is not None else Optional[kind])
    who = _who(opt.name)
    info = typer.Option(opt.flag, help=f"{who}: {opt.help}", show_default=opt.default is not None)
    return inspect.Parameter(opt.name, inspect.Parameter.KEYWORD_ONLY, annotation=Annotated[hint, info], default=opt.default)


BUDGET_HELP = ("The accuracy a lossy variant must keep, as the threshold of the family's metric (top-1 agreement "
               "or lowest cosine to fp32, e.g. 0.99; above 0, at most 1, and below 1 for a cosine); recorded in the package, variant=auto obeys it. "
               "Further floors of the family's budget stay (an embedding's mean cosine >= 0.99), but a custom model's "
               "closeness follows the cosine; `edgeai inspect` shows them [default: the family's].")


def export_command():
    """The full ``edgeai export`` command, its family options read from the registry."""
    from edgeai import families

    precision = choice_enum("Precision", EXPORT_PRECISIONS)
    params = [
        inspect.Parameter("name", inspect.Parameter.POSITIONAL_OR_KEYWORD, default=None, annotation=Annotated[Optional[str], typer.Argument(
            metavar="[NAME]", help=f"Built-in model: {families.names_line()}; or FILE.py:FACTORY; or leave it out and give "
                 "--model DIR_OR_ID [--task T] for any Hugging Face checkpoint (Optimum's exporter).", show_default=False)]),
        inspect.Parameter("output", inspect.Parameter.POSITIONAL_OR_KEYWORD, default=None, annotation=Annotated[Optional[Path], typer.Option(
            "--output", "-o", help="Package directory [default: ./NAME/].")]),
        inspect.Parameter("precision", inspect.Parameter.POSITIONAL_OR_KEYWORD, default=None, annotation=Annotated[Optional[precision], typer.Option(
            help="int8 runs the whole chain; fp32 stops before quantization [default: int8 for built-ins, fp32 for FILE.py:FACTORY].",
            show_default=False)]),
        inspect.Parameter("budget", inspect.Parameter.POSITIONAL_OR_KEYWORD, default=None, annotation=Annotated[Optional[float], typer.Option(
            help=BUDGET_HELP, show_default=False)]),
        *[_option_parameter(opt, fam) for opt, fam in _family_options()],
    ]

    def command(**kwargs) -> None:
        export(**kwargs)

    command.__doc__ = export.__doc__
    command.__signature__ = inspect.Signature(params)
    command.__annotations__ = {p.name: p.annotation for p in params}
    return single_command(command, "export")


def optimize(
    package: Annotated[str, typer.Argument(metavar="PACKAGE", help="Package directory, built-in name, or a plain .onnx file to wrap.", show_default=False)],
    output: Annotated[Optional[Path], typer.Option("--output", "-o", help="Where to write the package when wrapping a .onnx file.")] = None,
) -> None:
    """Add the 'optimized' variant (ONNX Runtime offline graph optimization)."""
    from edgeai.quantize import optimize as _optimize

    verb = _verb(package, output)
    with _said_after(), Stages(f"optimizing {package}") as stages:
        pkg = _optimize(package, out=output, progress=stages)
    out.print(f"{verb} {pkg.path}: {_variants_line(pkg)}", markup=False)


def quantize_command():
    """The full ``edgeai quantize`` command, its choices from edgeai.quantize's own tuples."""
    from edgeai.quantize import CALIBRATIONS, FP16_SOURCES, METHODS, PRECISIONS, PRESETS

    method_ = choice_enum("Method", METHODS)
    precision_ = choice_enum("QuantPrecision", PRECISIONS)
    preset_ = choice_enum("Preset", PRESETS)
    source_ = choice_enum("Source", FP16_SOURCES)
    calibrate_ = choice_enum("Calibrator", CALIBRATIONS)

    def quantize(
        package: Annotated[str, typer.Argument(metavar="PACKAGE", help="Package directory, built-in name, or a plain .onnx file to wrap.", show_default=False)],
        method: Annotated[method_, typer.Option(help="static (calibrated QDQ), dynamic, qat (image models: a quantization-aware fine-tune distilled from fp32, minutes), or auto (static when calibration inputs exist).")] = "auto",
        calibration: Annotated[Optional[Path], typer.Option(help="Directory of calibration images (image models) or .npy/.npz feeds.")] = None,
        output: Annotated[Optional[Path], typer.Option("--output", "-o", help="Where to write the package when wrapping a .onnx file.")] = None,
        precision: Annotated[precision_, typer.Option(help="int8; fp16 (the graph converted to float16 for GPUs; inputs and outputs stay float32); or int4 (weight-only, text-generation packages).")] = "int8",
        preset: Annotated[preset_, typer.Option(help="int8 for: cpu (ONNX Runtime's CPU kernels) or tensorrt (static, symmetric int8 QDQ, which TensorRT requires).")] = "cpu",
        from_: Annotated[Optional[source_], typer.Option("--from", help="fp16 only: convert fp32 (what TensorRT compiles whole) or optimized (fused ONNX Runtime ops, for CUDA) [default: fp32].", show_default=False)] = None,
        budget: Annotated[Optional[float], typer.Option(help=BUDGET_HELP.replace("the family's]", "the package's]"), show_default=False)] = None,
        qat_steps: Annotated[Optional[int], typer.Option(min=1, help="--method qat: fine-tuning steps of 16 photos [default: 300].", show_default=False)] = None,
        calibrate: Annotated[Optional[calibrate_], typer.Option(help="Static INT8's calibrator (ONNX Runtime's): minmax (the full range seen) or percentile (99.999% of the values, outliers clipped) [default: minmax].", show_default=False)] = None,
        replace: Annotated[bool, typer.Option("--replace", help="Replace the variant already there even when the new one misses the budget and the old one meets it (by default the old one is kept and the command fails).")] = False,
    ) -> None:
        """Add the 'int8' variant (or with --precision the 'fp16' one, or a text-generation
        package's 'int4'), with its agreement with fp32 and its CPU latency recorded."""
        from edgeai.quantize import quantize as _quantize

        precision, method, preset = precision_(precision).value, method_(method).value, preset_(preset).value
        if from_ is not None and precision != "fp16":
            raise InputError("--from applies to --precision fp16.")
        verb = _verb(package, output)
        with _said_after(), Stages(f"{'converting' if precision == 'fp16' else 'quantizing'} {package}") as stages:
            pkg = _quantize(package, method=method, calibration=calibration, out=output, progress=stages,
                            precision=precision, preset=preset, made_from=from_.value if from_ else None, budget=budget,
                            qat_steps=qat_steps, replace=replace, calibrate=calibrate_(calibrate).value if calibrate else None)
        out.print(f"{verb} {pkg.path}: {_variants_line(pkg)}", markup=False)

    # The annotations name this function's own Enums: resolve them here, where they are in scope.
    quantize.__annotations__ = typing.get_type_hints(quantize, localns=locals(), include_extras=True)
    return single_command(quantize, "quantize")


def register(app: typer.Typer) -> None:
    """export and quantize take their choices from the family registry and edgeai.quantize: build
    them when they run (or show their help), so ``edgeai run`` loads neither."""
    lazy_command(app, "export", EXPORT_HELP, export_command)
    app.command("optimize")(optimize)
    lazy_command(app, "quantize", QUANTIZE_HELP, quantize_command)
