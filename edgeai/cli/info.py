"""``edgeai inspect`` and ``edgeai models``: what a package holds, what is cached."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table
from rich.text import Text

from ._common import err, out, plain_error, print_json, print_wide, size_text


def inspect(
    package: Annotated[str, typer.Argument(metavar="PACKAGE", help="Package directory or built-in name.", show_default=False)],
    json_: Annotated[bool, typer.Option("--json", help="Print one JSON document on stdout.")] = False,
    provider: Annotated[Optional[str], typer.Option(help="Also load each variant on this provider (cpu, cuda, tensorrt) and show where ONNX Runtime places its nodes.")] = None,
    device_id: Annotated[int, typer.Option("--device-id", min=0, help="CUDA device index (as CUDA_VISIBLE_DEVICES leaves them), with --provider.")] = 0,
) -> None:
    """Show a package: manifest, variants with their measurements, inputs, outputs, operators.
    A variant whose file is damaged or missing is marked as such, the others are still shown,
    and the command ends with an error line (exit code 1)."""
    from edgeai.errors import InputError
    from edgeai.pipeline import open_package

    if device_id and provider is None:  # as `edgeai run` refuses an option it would ignore
        raise InputError("--device-id picks the GPU that --provider cuda or tensorrt loads the variants on: add --provider.")
    pkg = open_package(package)
    ops, damaged = _check_variants(pkg)
    files = pkg.damaged_assets()  # besides the variants: the tokenizer, an encoder
    placement = _placements(pkg, provider, device_id, skip=damaged) if provider else None
    if json_:
        doc = {"path": str(pkg.path), "manifest": pkg.manifest, "operators": ops}
        if placement is not None:
            doc["placement"] = placement
        if damaged:
            doc["damaged"] = damaged
        if files:
            doc["damaged_files"] = files
        print_json(doc)
    else:
        _print_package(pkg, ops, damaged, placement)
    if damaged:
        plain_error(_damage_sentence(pkg, damaged))
    if files:
        plain_error(pkg.damage_sentence(files))
    if damaged or files:
        raise typer.Exit(1)


def _check_variants(pkg) -> tuple[dict[str, dict], dict[str, dict]]:
    """Each variant's operator histogram, or, for a file that is missing or does not match its
    sha256, ``{"expected": sha256, "found": sha256 or None}``."""
    from edgeai.data.graphs import op_histogram
    from edgeai.errors import PackageError
    from edgeai.package import safe_path, sha256_file

    ops, damaged = {}, {}
    for name, v in pkg.variants.items():
        try:
            ops[name] = op_histogram(pkg.variant_path(name))
        except PackageError:
            path = safe_path(pkg.path, v["file"])
            found = sha256_file(path) if path.is_file() else None
            if found == v["sha256"]:
                raise  # the file is intact: its external data is at fault, and the sentence says so
            damaged[name] = {"expected": v["sha256"], "found": found}
    return ops, damaged


def _damage_sentence(pkg, damaged: dict[str, dict]) -> str:
    parts = [f"{name} ({pkg.variants[name]['file']} " + ("is missing)" if d["found"] is None else
             f"has sha256 {d['found'][:12]}, the manifest expects {d['expected'][:12]})") for name, d in damaged.items()]
    others = [n for n in pkg.variants if n not in damaged]
    rest = f"; the other variants ({', '.join(others)}) are intact" if others else ""
    return (f"The package {pkg.path} has {len(damaged)} damaged variant(s): {', '.join(parts)}{rest}; "
            "rebuild the damaged ones (edgeai optimize/quantize) or copy the package again.")


def _print_package(pkg, ops: dict[str, dict], damaged: dict[str, dict], placement: dict | None) -> None:
    m = pkg.manifest
    out.print(Text.assemble((m["name"], "bold"), f"  {m['family']} / {m['task']}  (schema v{m['schema_version']})  {pkg.path}"))
    if m.get("description"):
        out.print(m["description"], markup=False)
    io = Table("", "name", "dtype", "shape", box=None, pad_edge=False, title="inputs / outputs", title_justify="left")
    for kind in ("inputs", "outputs"):
        for t in m[kind]:
            io.add_row(kind[:-1], t["name"], t["dtype"], Text(f"[{', '.join(map(str, t['shape']))}]"))
    _wide(io)
    pre = m.get("preprocess", {})
    if pre.get("type") == "image":
        out.print(f"preprocess: {_image_steps(pre)}", markup=False)
    elif pre.get("type") == "text":
        model = f" (the model takes {pre['positions']})" if pre.get("positions", 0) > pre["max_length"] else ""
        out.print(f"preprocess: {pre['tokenizer']} (HF tokenizers), at most {pre['max_length']} tokens{model}, "
                  f"padded per batch with {pre.get('pad_token', '?')}", markup=False)
    post = m.get("postprocess", {})
    if post.get("type") not in (None, "none"):
        extra = {k: v for k, v in post.items() if k not in ("type", "output", "labels")}
        out.print(f"postprocess: {post['type']} of {post.get('output', 'the output')}"
                  + (f" ({', '.join(f'{k} {v}' for k, v in extra.items())})" if extra else ""), markup=False)
    if "budget" in m:
        from edgeai.data.compare import budget_rule

        b = m["budget"]
        out.print(f"accuracy budget: {budget_rule(b)} ({b.get('description', '')})", markup=False)
    metric = m.get("budget", {}).get("metric", "top1_agreement")
    vt = Table("variant", "file", "size", "from", metric.replace("_", " "), "max diff", "samples", "nodes", "file check",
               box=None, pad_edge=False, title="variants (accuracy vs PyTorch for fp32, vs fp32 otherwise)", title_justify="left")
    for name, v in m["variants"].items():
        acc = v.get("accuracy", {})
        fmt = lambda key, f: format(acc[key], f) if key in acc else "-"
        vt.add_row(name, Text(v["file"]), size_text(v["size"]), v.get("made_from") or "-", fmt(metric, ".4f"),
                   fmt("max_abs_diff", ".2g") if "max_rel_diff" not in acc else f"{acc['max_rel_diff']:.2g} (relative)", fmt("samples", ".0f"), str(sum(ops[name].values())) if name in ops else "-",
                   _file_check(damaged.get(name)))
    _wide(vt)
    from .build import budget_note  # build's module: it may reach the quantizer, for the --method qat hint

    for name, v in m["variants"].items():
        if note := budget_note(pkg, name, v.get("accuracy", {})):
            out.print(f"{name}{note}.", markup=False)
    _print_agreement_intervals(m)
    _print_latencies(m)
    for name, v in m["variants"].items():
        recipe = v.get("recipe")
        if recipe and isinstance(recipe.get("fusions"), dict):
            out.print(Text.assemble((f"{name} fusions: ", "dim"), ", ".join(f"{k} x{n}" for k, n in recipe["fusions"].items())))
        if recipe:
            # what was done on one line, then each record of how it was chosen on its own
            sub = {k: v for k, v in recipe.items() if isinstance(v, dict) and v and k != "fusions" and (k in MEANING or not _figures(v))}
            out.print(Text.assemble((f"{name} recipe: ", "dim"), recipe_text({k: v for k, v in recipe.items() if k not in sub})))
            for key, value in sub.items():
                text = _figure_table(value) if key in MEANING else recipe_text(value)
                out.print(Text.assemble((f"  {key}" + (f" ({MEANING[key]})" if key in MEANING else "") + ": ", "dim"), text))
    for name, hist in ops.items():
        top = ", ".join(f"{op} {n}" for op, n in list(hist.items())[:12])
        rest = list(hist.values())[12:]
        top += f", and {len(rest)} more type{'s' if len(rest) > 1 else ''} ({sum(rest)} nodes)" if rest else ""
        out.print(Text.assemble((f"{name} operators: ", "dim"), top))
    if placement is not None:
        _print_placement(placement)
    p = m["provenance"]
    out.print(Text.assemble(("provenance: ", "dim"), f"{p.get('source', '?')}" + (f" at revision {p['revision'][:12]}" if p.get("revision") else "") + f"; created {p['created']} by edgeai {p['edgeai']}; "
                            f"opset {p.get('opset', '?')}; " + ", ".join(f"{k} {v}" for k, v in p.get("versions", {}).items())))


def recipe_text(recipe: dict, prefix: str = "") -> str:
    """A recipe on one readable line: nested keys dotted, figures to 4 digits, long lists
    counted (``inspect --json`` has them whole)."""
    parts = []
    for key, value in recipe.items():
        if key == "fusions" and not prefix:
            continue  # its own line above
        if isinstance(value, dict) and value and (_figures(value) or key in MEANING):
            value = _figure_table(value)  # e.g. a loss per trial
        elif isinstance(value, dict):
            parts.append(recipe_text(value, f"{prefix}{key}.") if value else f"{prefix}{key}=-")
            continue
        if isinstance(value, float):
            value = f"{value:.4g}"
        elif isinstance(value, list):
            value = (", ".join(f"{v:.4g}" if isinstance(v, float) else str(v) for v in value) or "-") if len(value) <= 3 else f"{len(value)} items"
        parts.append(f"{prefix}{key}={'-' if value is None else value}")
    return "; ".join(p for p in parts if p)


# Recipe records whose figures do not say what they are on their own.
MEANING = {"reduce_range_nodes": "7-bit weights here: share of outputs whose int16 pair sums saturate on AVX2 without VNNI"}


def _figure_table(d: dict) -> str:
    return ", ".join(f"{k} {v:.4g}" for k, v in d.items())


def _figures(d: dict) -> bool:
    """A table of figures (a loss per trial, a share per layer), printed as ``key value, ...``."""
    return len(d) > 3 and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in d.values())


def _print_agreement_intervals(m: dict) -> None:
    """Per variant, each agreement figure with its 95% interval and sample count, and the inputs:
    ``int8 vs fp32 on debian-photos-v1: top1 agreement 0.9944 [0.9835, 0.9981], n=355``."""
    for name, v in m["variants"].items():
        acc = v.get("accuracy", {})
        figures = [f"{k.replace('_', ' ')} {acc[k]:.4f} [{acc[k + '_ci95'][0]:.4f}, {acc[k + '_ci95'][1]:.4f}]"  # one precision:
                   # at 3 places "0.9999 [1.000, 1.000]" put the mean outside its own interval (review)
                   for k in ("top1_agreement", "cosine_mean") if k in acc and k + "_ci95" in acc]
        test = ""
        if figures and "test_accuracy" in acc:  # a trained classifier's own figure against the labels, on its own texts
            base = f" (majority baseline {acc['baseline_accuracy']:.4f})" if "baseline_accuracy" in acc else ""
            n = f", n={acc['test_samples']:.0f}" if "test_samples" in acc else ""
            test = f"; test accuracy {acc['test_accuracy']:.4f}{base}{n}"
        if figures:
            vs = v.get("accuracy_details", {}).get("vs", "fp32" if name != "fp32" else "pytorch")
            on = f" on {acc['held_out']}" if "held_out" in acc else ""
            ppl = (f"; perplexity {acc['perplexity']:.4g} (fp32 {acc['perplexity_fp32']:.4g}, kept {acc['perplexity_kept']:.3f})"
                   if "perplexity_kept" in acc else "")
            out.print(Text.assemble((f"{name} vs {vs}{on}: ", "dim"),
                                    f"{', '.join(figures)}, n={acc.get('samples', 0):.0f} (95% intervals){test}{ppl}"))


def _file_check(d: dict | None) -> Text:
    if d is None:
        return Text("ok", style="green")
    if d["found"] is None:
        return Text("DAMAGED: missing", style="bold red")
    return Text(f"DAMAGED: sha256 {d['found'][:12]}, expected {d['expected'][:12]}", style="bold red")


def _placements(pkg, provider: str, device_id: int, skip: dict | None = None) -> dict[str, dict]:
    """Each variant loaded on ``provider`` (strict): ONNX Runtime's nodes per provider."""
    from edgeai.errors import EdgeAIError
    from edgeai.providers import canonical, tensorrt_flags
    from edgeai.session import Session

    m, found = pkg.manifest, {}
    for name in (n for n in pkg.variants if n not in (skip or {})):
        try:
            s = Session(pkg.variant_path(name), m["inputs"], m["outputs"], provider, strict=True, device_id=device_id,
                        model_sha256=pkg.variants[name]["sha256"], placement=True,
                        tensorrt=tensorrt_flags(name, pkg.variants[name]))
        except EdgeAIError as e:
            if "cannot start" in str(e) or "Unknown execution provider" in str(e):
                raise  # the provider itself is missing: one sentence for the whole command
            found[name] = {"provider": canonical(provider), "nodes": {}, "error": str(e)}
            continue
        found[name] = {"provider": s.provider, "nodes": s.choice.placement}
        s.close()
    return found


def _print_placement(placement: dict[str, dict]) -> None:
    from edgeai.providers import placement_line, short_name

    t = Table("variant", "provider", "nodes per provider (after ONNX Runtime's own optimizations)", box=None, pad_edge=False,
              title="placement", title_justify="left")
    for name, p in placement.items():
        nodes = p["nodes"]
        line = p.get("error") or placement_line(nodes, p["provider"]) or (
            f"all {sum(nodes.values())} on {short_name(p['provider'])}" if nodes else "not reported")
        t.add_row(name, short_name(p["provider"]), line)
    _wide(t)


def _wide(table: Table) -> None:
    print_wide(table)


def _print_latencies(m: dict) -> None:
    """Every recorded latency (export, optimize, quantize and bench --record), this machine's first."""
    from edgeai.machine import describe_machine, is_this_machine
    from edgeai.report import latency_captions
    from edgeai.providers import short_name

    rows = [(name, e) for name, v in m["variants"].items() for e in v.get("latency", {}).values()]
    rows += [("PyTorch", e) for e in (m.get("reference") or {}).get("latency", {}).values()]
    if not rows:
        out.print(Text("latency: none recorded (edgeai bench PKG --record)", style="dim"))
        return
    f = lambda e, k, d: format(e[k], d) if e.get(k) is not None else "-"
    t = Table("engine", "provider", "batch", "threads", "p50", "p90", "p99", "session", "first", "items/s", "RSS MB", "by",
              "measured", "machine", box=None, pad_edge=False, title="recorded latency (ms)", title_justify="left")
    for name, e in sorted(rows, key=lambda r: (not is_this_machine(r[1].get("machine")), r[1]["provider"], r[1].get("batch", 1))):
        t.add_row(name, short_name(e["provider"]), str(e.get("batch", 1)), str(e.get("threads") or "default"),
                  f(e, "p50_ms", ".3f"), f(e, "p90_ms", ".3f"), f(e, "p99_ms", ".3f"), f(e, "session_ms", ".1f"),
                  f(e, "first_ms", ".1f"), f(e, "throughput", ".1f"), f(e, "peak_rss_mb", ".0f"), e.get("source", "quantize"),
                  e.get("measured", "-")[:16].replace("T", " "), describe_machine(e.get("machine")))
    _wide(t)
    for line in latency_captions([e for _, e in rows]):
        out.print(Text(line, style="dim"))


def models(
    clear: Annotated[bool, typer.Option("--clear", help="Remove the cached packages and edgeai's own caches from $EDGEAI_HOME (nothing else there).")] = False,
    json_: Annotated[bool, typer.Option("--json", help="Print one JSON document on stdout.")] = False,
) -> None:
    """List the built-in models, the packages cached in $EDGEAI_HOME and those in this folder's subfolders."""
    from edgeai import home
    from edgeai.families import builtin_models

    if clear:
        n, left = home.clear()
        err.print(f"removed {n} cached package(s) and edgeai's caches from {home.home()}", markup=False)
        if left:
            err.print(f"left {len(left)} entr{'y' if len(left) == 1 else 'ies'} edgeai did not make: {', '.join(left[:5])}"
                      f"{', ...' if len(left) > 5 else ''}", markup=False)
        return
    cached = {p.name: str(p) for p in home.cached_packages()}
    unreadable = {path: why for path in cached.values() if (why := _unreadable(path))}
    rows = []
    for b in builtin_models().values():
        d = home.builtin_dir(b.model)
        rows.append({"name": b.model, "aliases": list(b.aliases), "family": b.name, "task": b.task,
                     "description": b.description, "cached": str(d) if d.name in cached else None})
    here = _packages_here()
    if json_:
        print_json({"home": str(home.home()), "builtins": rows, "cached": list(cached.values()), "unreadable": unreadable,
                    "here": here})
        return
    t = Table("name", "aliases", "family", "task", "cached", box=None, pad_edge=False, title="built-in models", title_justify="left")
    for r in rows:
        shown = r["cached"] and (f"{r['cached']} (unreadable)" if r["cached"] in unreadable else r["cached"])
        t.add_row(r["name"], ", ".join(r["aliases"]), r["family"], r["task"], Text(shown or "not built yet"))
    print_wide(t)
    out.print(Text(f"cache: {home.home()} ({len(cached)} package(s))"))
    for path in cached.values():
        out.print(Text(f"  {path}" + (f"  unreadable: {unreadable[path]}" if path in unreadable else "")))
    if here:  # what `edgeai export NAME` wrote here (./NAME): --model NAME from this folder runs it
        out.print(Text(f"in this folder ({len(here)} package(s)):"))
        for p in here:
            out.print(Text(f"  {p['path']}  {p['name'] or '?'}" + (f"  unreadable: {p['unreadable']}" if "unreadable" in p else "")))


def _unreadable(path: str) -> str | None:
    """Why a cached package cannot be opened (a hand-edited or half-copied manifest), or None.
    Its model files are not hashed here: that is `edgeai inspect`'s file check."""
    from edgeai.errors import EdgeAIError
    from edgeai.package import Package

    try:
        Package.open(path)
    except EdgeAIError as e:
        return str(e)
    except OSError as e:  # unreadable as a file (permissions): listed, not a traceback
        return f"{e.strerror or type(e).__name__}: {e.filename or path}"
    return None


def _packages_here() -> list[dict]:
    """The packages in the current folder's subfolders, by their manifests' names; one whose
    manifest cannot be read at all (a hand edit) is listed as unreadable, with no name."""
    from edgeai.atomic import look

    try:
        folders = sorted(p for p in Path.cwd().iterdir() if p.is_dir())
    except OSError:
        return []
    found = []
    for p in folders:
        m, why = look(p)
        if m is not None or why:
            why = why or _unreadable(str(p))
            found.append({"path": f"./{p.name}", "name": m and m["name"], **({"unreadable": why} if why else {})})
    return found


def doctor(
    json_: Annotated[bool, typer.Option("--json", help="Print one JSON document on stdout.")] = False,
) -> None:
    """What this machine can run: the ONNX Runtime build, each provider tried on a one-node session,
    the CUDA/cuDNN/TensorRT libraries found, the GPU and driver. Run it first for GPU problems."""
    from edgeai.doctor import diagnose

    d = diagnose()
    if json_:
        print_json(d)
        return
    o = d["onnxruntime"]
    out.print(Text(f"edgeai {d['edgeai']}, Python {d['python']}, {d['platform']} ({d['machine']})"))
    out.print(Text(f"ONNX Runtime {o['version']} ({o['package']}, {o['device']} build); compiled in: {', '.join(o['compiled_in'])}"))
    t = Table("provider", "starts", "why not", box=None, pad_edge=False, title="providers (a one-node session on each)",
              title_justify="left")
    for p in d["providers"]:
        t.add_row(p["name"], Text("yes", style="green") if p["starts"] else Text("no", style="red"), Text(p["reason"] or ""))
    print_wide(t)
    if d["libraries"]:
        lt = Table("library", "file", "found", box=None, pad_edge=False, title="GPU libraries (dynamic loader)",
                   title_justify="left")
        for lib in d["libraries"]:
            lt.add_row(lib["library"], lib["file"], Text("yes", style="green") if lib["found"] else Text("no", style="red"))
        print_wide(lt)
    if d["gpus"]:
        for g in d["gpus"]:
            out.print(Text(f"GPU: {g['name']}, driver {g['driver']}, {g['memory']}"))
    else:
        out.print(Text(f"GPU: none found: {d['gpu_note']}"))
    out.print(Text(f"provider=\"auto\" runs on: {d['auto']}", style="bold"))


def _image_steps(pre: dict) -> str:
    """What the runtime does to a photo, in order, as the manifest says."""
    interp = pre.get("interpolation", "bilinear")
    if pre.get("resize"):
        steps = [f"resize to {pre['resize'][0]}x{pre['resize'][1]} ({interp})"]
    else:
        steps = [f"resize short side to {pre['resize_shorter']} ({interp}{', longer side floored' if pre.get('rounding') == 'floor' else ''})"]
    if pre.get("crop"):
        steps.append(f"centre crop {pre['crop'][0]}x{pre['crop'][1]}")
    steps.append(f"x*{pre.get('scale', 1 / 255):.6g}")
    if "mean" in pre:
        steps.append(f"mean {pre['mean']}, std {pre['std']}")
    steps.append(f"{pre.get('channel_order', 'RGB')} {pre.get('layout', 'NCHW')}")
    if pre.get("source"):
        steps.append(f"from {pre['source']}")
    return ", ".join(steps)
