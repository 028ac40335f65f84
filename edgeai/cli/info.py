"""``edgeai inspect`` and ``edgeai models``: what a package holds, what is cached."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table
from rich.text import Text

from ._common import err, handle_errors, out, print_json, print_wide


@handle_errors
def inspect(
    package: Annotated[str, typer.Argument(help="Package directory or built-in name.", show_default=False)],
    json_: Annotated[bool, typer.Option("--json", help="Print one JSON document on stdout.")] = False,
) -> None:
    """Show a package: manifest, variants with their measurements, inputs, outputs, operators."""
    from edgeai.pipeline import open_package
    from edgeai.quantize import op_histogram

    pkg = open_package(package)
    ops = {name: op_histogram(pkg.variant_path(name)) for name in pkg.variants}
    if json_:
        print_json({"path": str(pkg.path), "manifest": pkg.manifest, "operators": ops})
        return
    m = pkg.manifest
    out.print(Text.assemble((m["name"], "bold"), f"  {m['family']} / {m['task']}  (schema v{m['schema_version']})  {pkg.path}"))
    if m.get("description"):
        out.print(m["description"], markup=False)
    io = Table("", "name", "dtype", "shape", box=None, pad_edge=False, title="inputs / outputs", title_justify="left")
    for kind in ("inputs", "outputs"):
        for t in m[kind]:
            io.add_row(kind[:-1], t["name"], t["dtype"], Text(str(t["shape"])))
    _wide(io)
    pre = m.get("preprocess", {})
    if pre.get("type") == "image":
        out.print(
            f"preprocess: resize short side to {pre['resize_shorter']} ({pre['interpolation']}), centre crop "
            f"{pre['crop'][0]}x{pre['crop'][1]}, x*{pre['scale']:.6g}, mean {pre['mean']}, std {pre['std']}, "
            f"{pre['channel_order']} {pre['layout']}",
            markup=False,
        )
    if "budget" in m:
        b = m["budget"]
        out.print(f"accuracy budget: {b['metric']} >= {b['min']} ({b.get('description', '')})", markup=False)
    metric = m.get("budget", {}).get("metric", "top1_agreement")
    vt = Table("variant", "file", "MB", "from", metric.replace("_", " "), "max abs diff", "samples", "nodes",
               box=None, pad_edge=False, title="variants (accuracy vs PyTorch for fp32, vs fp32 otherwise)", title_justify="left")
    for name, v in m["variants"].items():
        acc = v.get("accuracy", {})
        fmt = lambda key, f: format(acc[key], f) if key in acc else "-"
        vt.add_row(name, Text(v["file"]), f"{v['size'] / 1e6:.1f}", v.get("made_from") or "-", fmt(metric, ".4f"),
                   fmt("max_abs_diff", ".2g"), fmt("samples", ".0f"), str(sum(ops[name].values())))
    _wide(vt)
    _print_latencies(m)
    for name, v in m["variants"].items():
        recipe = v.get("recipe")
        if recipe and isinstance(recipe.get("fusions"), dict):
            out.print(Text.assemble((f"{name} fusions: ", "dim"), ", ".join(f"{k} x{n}" for k, n in recipe["fusions"].items())))
        if recipe:
            out.print(Text.assemble((f"{name} recipe: ", "dim"), str(recipe)))
    for name, hist in ops.items():
        top = ", ".join(f"{op} {n}" for op, n in list(hist.items())[:12])
        out.print(Text.assemble((f"{name} operators: ", "dim"), top))
    p = m["provenance"]
    out.print(Text.assemble(("provenance: ", "dim"), f"{p.get('source', '?')}; created {p['created']} by edgeai {p['edgeai']}; "
                            f"opset {p.get('opset', '?')}; {p.get('versions', {})}"))


def _wide(table: Table) -> None:
    print_wide(table)


def _print_latencies(m: dict) -> None:
    """Every recorded latency (quantize and bench --record), this machine's first."""
    from edgeai.machine import machine_id
    from edgeai.providers import short_name

    here = machine_id()
    rows = [(name, e) for name, v in m["variants"].items() for e in v.get("latency", {}).values()]
    rows += [("PyTorch", e) for e in (m.get("reference") or {}).get("latency", {}).values()]
    if not rows:
        out.print(Text("latency: none recorded (edgeai bench PKG --record)", style="dim"))
        return
    f = lambda e, k, d: format(e[k], d) if e.get(k) is not None else "-"
    t = Table("engine", "provider", "batch", "threads", "p50", "p90", "p99", "session", "first", "items/s", "RSS MB", "by",
              "measured", "machine", box=None, pad_edge=False, title="recorded latency (ms)", title_justify="left")
    for name, e in sorted(rows, key=lambda r: (r[1].get("machine") != here, r[1]["provider"], r[1].get("batch", 1))):
        t.add_row(name, short_name(e["provider"]), str(e.get("batch", 1)), str(e.get("threads") or "default"),
                  f(e, "p50_ms", ".3f"), f(e, "p90_ms", ".3f"), f(e, "p99_ms", ".3f"), f(e, "session_ms", ".1f"),
                  f(e, "first_ms", ".1f"), f(e, "throughput", ".1f"), f(e, "peak_rss_mb", ".0f"), e.get("source", "quantize"),
                  e.get("measured", "-")[:16].replace("T", " "), "this one" if e.get("machine") == here else e.get("machine", "?"))
    _wide(t)


@handle_errors
def models(
    clear: Annotated[bool, typer.Option("--clear", help="Empty the package cache ($EDGEAI_HOME).")] = False,
    json_: Annotated[bool, typer.Option("--json", help="Print one JSON document on stdout.")] = False,
) -> None:
    """List the built-in models and the packages cached in $EDGEAI_HOME."""
    from edgeai import home

    if clear:
        n = home.clear()
        err.print(f"removed {n} cached package(s) from {home.home()}", markup=False)
        return
    cached = {p.name: str(p) for p in home.cached_packages()}
    rows = []
    for b in home.BUILTINS.values():
        d = home.builtin_dir(b.name)
        rows.append({"name": b.name, "aliases": list(b.aliases), "family": b.family, "task": b.task,
                     "description": b.description, "cached": str(d) if d.name in cached else None})
    if json_:
        print_json({"home": str(home.home()), "builtins": rows, "cached": list(cached.values())})
        return
    t = Table("name", "aliases", "family", "task", "cached", box=None, pad_edge=False, title="built-in models", title_justify="left")
    for r in rows:
        t.add_row(r["name"], ", ".join(r["aliases"]), r["family"], r["task"], Text(r["cached"] or "not built yet"))
    out.print(t)
    out.print(Text(f"cache: {home.home()} ({len(cached)} package(s))"))
    for path in cached.values():
        out.print(Text(f"  {path}"))


@handle_errors
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
