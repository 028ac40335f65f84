"""``edgeai report``: one self-contained HTML page about a package, from its manifest.

The parity ladder PyTorch -> fp32 -> optimized -> int8 (-> fp16): what each rung was compared
with, per-output max/mean absolute difference, the task metric, file size and latency. Every
number is read from the manifest (export, optimize, quantize and ``bench --record`` put them
there), so the page and ``edgeai inspect`` agree; nothing is measured here. The figures are
also embedded as JSON (``<script type="application/json" id="edgeai-data">``) for tools.

Charts use matplotlib (the ``report`` extra), imported only here, drawn as inline SVG so the
page loads no network assets.
"""

from __future__ import annotations

import html
import io
import json
import os
import re
import uuid
from pathlib import Path
from typing import Any, Callable

from . import __version__
from .errors import DependencyError, InputError, shell_arg
from .machine import is_this_machine, machine_id
from .package import VARIANTS, Package, now
from .choice import fastest_recorded
from .data.compare import budget_rule
from .pipeline import choose_variant, meets_budget, resolve_threads
from .providers import CPU, short_name

# Task metrics, in the order the page shows them, with their headings.
METRICS = {
    "top1_agreement": "top-1 agreement",
    "cosine_min": "cosine min",
    "cosine_mean": "cosine mean",
    "closeness": "closeness",  # 1 - the relative RMS difference: the scale cosine cannot see
    "test_accuracy": "test accuracy",
    "max_rel_diff": "max rel diff",
    "perplexity_kept": "perplexity kept",  # a generation budget's second figure (budget "also")
}


def _headline_key(pkg: Package) -> tuple[str, str, int] | None:
    """The (provider, machine, batch) most rows can be compared at: CPU, this machine, batch 1 first."""
    keys = [(e["provider"], e.get("machine", "?"), e.get("batch", 1))
            for v in pkg.variants.values() for e in v.get("latency", {}).values()]
    if not keys:
        return None
    return max(set(keys), key=lambda k: (is_this_machine(k[1]), k[0] == CPU, k[2] == 1, keys.count(k)))


def _entry(latency: dict, key: tuple[str, str, int] | None, torch: bool = False) -> dict | None:
    if key is None:
        return None
    provider = ("torch-cpu" if key[0] == CPU else "torch-cuda") if torch else key[0]
    # The fastest figure at this key (a small model may be recorded on one thread and on the default), as auto uses.
    return fastest_recorded({"latency": latency}, provider, key[1], key[2])


def damaged_variants(pkg: Package) -> dict[str, str]:
    """Variant name -> why its file cannot run (missing, or changed since packaging), as
    ``edgeai inspect`` finds them; the page marks these rather than vouching for their figures."""
    from .errors import PackageError

    bad = {}
    for name, v in pkg.variants.items():
        try:
            pkg.verified_file(v["file"], v["sha256"])
        except PackageError as e:
            bad[name] = str(e)
    return bad


def ladder(pkg: Package, damaged: dict[str, str] | None = None, damaged_files: dict[str, str] | None = None) -> dict[str, Any]:
    """The page's figures: one rung per engine/variant, and every recorded latency entry."""
    damaged = damaged_variants(pkg) if damaged is None else damaged
    key = _headline_key(pkg)
    ref = pkg.manifest.get("reference") or {}
    rungs = [{"rung": "PyTorch", "variant": None, "made_from": None, "compared_with": None, "outputs": {}, "metrics": {},
              "size_mb": None, "latency": _entry(ref.get("latency", {}), key, torch=True), "meets_budget": None}]
    for name in VARIANTS:
        if name not in pkg.variants:
            continue
        v = pkg.variants[name]
        acc = v.get("accuracy", {})
        details = v.get("accuracy_details", {})
        vs = details.get("vs") or ("fp32" if name != "fp32" else ("pytorch" if acc else None))
        outputs = details.get("outputs")
        if not outputs and ("max_abs_diff" in acc or "mean_abs_diff" in acc):
            outputs = {"all outputs": {k: acc[k] for k in ("max_abs_diff", "mean_abs_diff") if k in acc}}
        rungs.append({
            "rung": name, "variant": name, "made_from": v.get("made_from"), "compared_with": vs,
            "outputs": outputs or {}, "metrics": {k: acc[k] for k in METRICS if k in acc},
            "samples": acc.get("samples"), "test_samples": acc.get("test_samples"), "baseline_accuracy": acc.get("baseline_accuracy"),
            **_held_out_figures(acc),
            "size_mb": v["size"] / 1e6, "latency": _entry(v.get("latency", {}), key),
            "meets_budget": meets_budget(pkg, name) if pkg.manifest.get("budget") else None, "damaged": name in damaged,
        })
    entries = [{"engine": name, **e} for name, v in pkg.variants.items() for e in v.get("latency", {}).values()]
    entries += [{"engine": "PyTorch", **e} for e in ref.get("latency", {}).values()]
    return {
        "model": pkg.name, "family": pkg.manifest["family"], "task": pkg.task, "package": str(pkg.path),
        "budget": pkg.manifest.get("budget"), "headline": dict(zip(("provider", "machine", "batch"), key)) if key else None,
        "rungs": rungs, "latencies": entries, "this_machine": machine_id(), "auto": _auto(pkg),
        # a generation package's PyTorch reference is timed by benchmarks/generate.py, not bench
        "torch_hint": None if rungs[0]["latency"] or "generation" in pkg.manifest else _torch_hint(pkg), "damaged": damaged,
        # the tokenizer, an encoder: without them no variant runs
        "damaged_files": pkg.damaged_assets() if damaged_files is None else damaged_files,
    }


def _auto(pkg: Package) -> dict[str, str]:
    """What ``edgeai.load(pkg)`` runs on this machine's CPU, and why (edgeai.pipeline's own rule)."""
    variant, reason = choose_variant(pkg, CPU)
    reason += resolve_threads(pkg, variant, CPU)[1]  # and on how many threads, as edgeai.load would
    return {"provider": CPU, "variant": variant, "reason": reason}


def _torch_hint(pkg: Package) -> str:
    """The command that fills the PyTorch row: bench against torch, recorded (a family that cannot
    rebuild its PyTorch model needs the user's factory, which the provenance may name)."""
    from .families import families

    family = families().get(pkg.manifest["family"])
    factory = ""
    if family is None or not family.has_hook("reference"):
        source = str((pkg.manifest.get("provenance") or {}).get("source") or "")
        factory = " --factory " + (shell_arg(source) if re.fullmatch(r".+[.]py:\w+", source) else "FILE.py:FN")
    return f"edgeai bench {shell_arg(pkg.path)} --against torch{factory} --record"


# -- charts ------------------------------------------------------------------------------------
def _pyplot():
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    return plt


def _svg(fig) -> str:
    buf = io.StringIO()
    fig.savefig(buf, format="svg", metadata={"Date": None})
    text = buf.getvalue()
    return text[text.index("<svg"):]  # drop the XML prolog and DOCTYPE: inline SVG needs neither


# -- page --------------------------------------------------------------------------------------
_CSS = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2rem auto;max-width:72rem;padding:0 1rem;color:#1a202c}
h1{font-size:1.5rem;margin-bottom:.2rem}h2{font-size:1.15rem;margin-top:2rem}
.sub{color:#4a5568}table{border-collapse:collapse;margin:.5rem 0 1rem}th,td{padding:.3rem .6rem;border-bottom:1px solid #e2e8f0;text-align:right;vertical-align:top}
th:first-child,td:first-child{text-align:left}th{background:#f7fafc;font-weight:600}td.l{text-align:left}
.charts{display:flex;flex-wrap:wrap;gap:1rem}.charts svg{max-width:100%;height:auto}.note{color:#718096;font-size:.9em}
"""


def _num(x: Any, fmt: str) -> str:
    if x is None:
        return "<td>-</td>"
    return f'<td data-value="{x!r}">{format(x, fmt)}</td>'


def render(data: dict, charts: dict[str, str] | None, chart_note: str | None = None) -> str:
    """The page: header, the parity ladder, the charts, every recorded latency, and the data as JSON."""
    parts = [*_header(data), *_ladder_table(data), *_charts_section(charts, chart_note), *_latency_table(data)]
    blob = json.dumps(data).replace("</", "<\\/")  # a string in the data cannot close the script element
    parts.append(f'<script type="application/json" id="edgeai-data">{blob}</script>')
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def _header(data: dict) -> list[str]:
    e = html.escape
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>edgeai report: {e(data['model'])}</title>",
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<style>{_CSS}</style></head><body>",
        f"<h1>{e(data['model'])}</h1>",
        f'<p class="sub">{e(data["family"])} / {e(data["task"])} &middot; {e(data["package"])} &middot; '
        f"edgeai {e(__version__)}, {e(now())}</p>",
    ]
    if data["budget"]:
        b = data["budget"]
        parts.append(f'<p>Accuracy budget: <b>{e(budget_rule(b)).replace(" &gt;= ", " &ge; ")}</b> {e(b.get("description", ""))}</p>')
    return parts


def _ladder_table(data: dict) -> list[str]:
    """One row per rung and output: differences, the budget's metrics, size and latency."""
    e = html.escape
    metrics = [k for k in METRICS if any(k in r["metrics"] for r in data["rungs"])]
    h = data["headline"]
    where = f"{short_name(h['provider'])}, batch {h['batch']}, machine {h['machine']}" if h else "none recorded"
    parts = [
        "<h2>Parity ladder</h2>",
        '<p class="note">Each rung is compared with the one it names (fp32 with PyTorch at export; the others with fp32 on '
        f"held-out inputs). Latency: {e(where)}; each variant's fastest recorded figure, as auto chooses by it, "
        "with its thread count where one was set (PyTorch's always) rather than ONNX Runtime's default.</p>",
        '<table id="ladder"><thead><tr><th>rung</th><th>made from</th><th>compared with</th><th>output</th>'
        "<th>max abs diff</th><th>mean abs diff</th>"
        + "".join(f"<th>{e(METRICS[m])}</th>" for m in metrics)
        + "<th>samples</th><th>within budget</th><th>size MB</th><th>p50 ms</th><th>p99 ms</th><th>x PyTorch</th>"
        "</tr></thead><tbody>",
    ]
    torch_p50 = (data["rungs"][0]["latency"] or {}).get("p50_ms")
    for r in data["rungs"]:
        parts += _rung_rows(r, metrics, torch_p50)
    parts.append("</tbody></table>")
    baseline = next((r["baseline_accuracy"] for r in data["rungs"] if r.get("baseline_accuracy") is not None), None)
    if baseline is not None:
        parts.append(f'<p class="note">Test accuracy of always predicting the most common class: {baseline:.4f}.</p>')
    return parts + _choice_notes(data)


def _choice_notes(data: dict) -> list[str]:
    """Which variants meet the budget, what ``auto`` runs here, and how to fill an empty PyTorch row."""
    e = html.escape
    named = [r for r in data["rungs"] if r["variant"]]
    within = ", ".join(r["rung"] for r in named if r["meets_budget"] and not r.get("damaged")) or "none"
    missing = ", ".join(r["rung"] for r in named if not r["meets_budget"] and not r.get("damaged")) or "none"
    auto = data["auto"]
    verdict = (f'<p id="budget-verdict">Within the accuracy budget: <b>{e(within)}</b>; missing it: <b>{e(missing)}</b> '
               '(a variant missing it is never chosen by <code>variant="auto"</code>).</p>' if data["budget"] else
               '<p id="budget-verdict">The package sets no accuracy budget, so <code>variant="auto"</code> ranks every '
               'variant by speed alone.</p>')  # not "within the budget: all" of a package without one (review)
    runs = "would run, once the package is whole again," if data.get("damaged_files") else "runs"
    choice = (f'<p id="auto-choice">On this machine, <code>variant="auto"</code> with provider {e(short_name(auto["provider"]))} '
              f'{runs} <b>{e(auto["variant"])}</b>: {e(auto["reason"])}.</p>')
    parts = [verdict, choice]
    if data.get("damaged"):
        parts.insert(0, f'<p class="note" id="damaged"><b>Damaged, cannot run:</b> {e(", ".join(data["damaged"]))} '
                        '(the file is missing or changed since packaging; its figures are those recorded before). '
                        'Rebuild it with <code>edgeai optimize</code>/<code>quantize</code> or copy the package again.</p>')
    if data.get("damaged_files"):  # first: the verdicts below hold only once the package is whole again
        parts.insert(0, f'<p class="note" id="damaged-files"><b>Missing or damaged, so no variant can run:</b> '
                        f'{e(Package.damage_list(data["damaged_files"]))}. '
                        'Copy the package again (or export it again); the figures below are those recorded before.</p>')
    if data.get("torch_hint"):
        parts.append(f'<p class="note" id="torch-hint">The PyTorch row has no figures for this machine: run '
                     f'<code>{e(data["torch_hint"])}</code> to fill it.</p>')
    return parts


def _rung_rows(r: dict, metrics: list[str], torch_p50: float | None) -> list[str]:
    e = html.escape
    rows = []
    lat = r["latency"] or {}
    for i, (out_name, d) in enumerate(list(r["outputs"].items()) or [("-", {})]):
        first = i == 0
        cells = [f'<td class="l">{e(r["rung"]) if first else ""}</td>',
                 f'<td class="l">{e(r["made_from"] or "-") if first else ""}</td>',
                 f'<td class="l">{e(r["compared_with"] or "-") if first else ""}</td>',
                 f'<td class="l">{e(out_name)}</td>',
                 _num(d.get("max_abs_diff"), ".2e"), _num(d.get("mean_abs_diff"), ".2e")]
        cells += [_metric_cell(r, m) if first else "<td></td>" for m in metrics]
        if first:
            ratio = lat["p50_ms"] / torch_p50 if torch_p50 and lat.get("p50_ms") is not None else None
            within = "damaged" if r.get("damaged") else {True: "yes", False: "no"}.get(r["meets_budget"], "-")
            cells += [_num(r.get("samples"), ".0f"), f'<td class="l">{within}</td>', _num(r["size_mb"], ".2f"),
                      _p50_cell(lat), _num(lat.get("p99_ms"), ".3f"), _num(ratio, ".2f")]
        else:
            cells += ["<td></td>"] * 6
        row_attr = f' class="rung" data-rung="{e(r["rung"])}"' if first else ' class="more"'
        rows.append(f"<tr{row_attr}>{''.join(cells)}</tr>")
    return rows


def _p50_cell(lat: dict) -> str:
    """p50, and the threads it ran on where they were set: a one-thread figure beside PyTorch's
    default threads would otherwise read as the same conditions."""
    cell, n = _num(lat.get("p50_ms"), ".3f"), lat.get("threads")
    if not n or cell == "<td>-</td>":
        return cell
    return cell.replace("</td>", f' <span class="ci">({n} thread{"s" if n != 1 else ""})</span></td>')


def _held_out_figures(acc: dict) -> dict:
    """A rung's 95% intervals (``{metric: [low, high]}``) and the held-out set it was measured on."""
    return {"intervals": {k: acc[f"{k}_ci95"] for k in METRICS if f"{k}_ci95" in acc}, "held_out": acc.get("held_out")}


def _metric_cell(r: dict, metric: str) -> str:
    """The figure with its 95% interval beside it, e.g. ``0.9944 [0.9835, 0.9981]`` (sample count: its own column)."""
    cell = _num(r["metrics"].get(metric), ".4f")
    if metric == "test_accuracy" and r.get("test_samples") and cell != "<td>-</td>":  # its own texts, not the samples column's
        return cell.replace("</td>", f' <span class="ci">(n={r["test_samples"]:.0f})</span></td>')
    ci = r.get("intervals", {}).get(metric)
    if ci is None or cell == "<td>-</td>":
        return cell
    note = f"95% confidence interval, {r.get('samples') or 0:.0f} samples of {r.get('held_out') or 'held-out inputs'}"
    return cell.replace("</td>", f' <span class="ci" title="{html.escape(note)}">[{ci[0]:.4f}, {ci[1]:.4f}]</span></td>')


def _charts_section(charts: dict[str, str] | None, chart_note: str | None) -> list[str]:
    e = html.escape
    if charts:
        return ["<h2>Charts</h2>", '<div class="charts">'
                + "".join(f'<figure id="chart-{e(k)}">{svg}</figure>' for k, svg in charts.items()) + "</div>"]
    return ["<h2>Charts</h2>", f'<p class="note">{e(chart_note or "No figures to chart.")}</p>']


def _latency_table(data: dict) -> list[str]:
    e = html.escape
    parts = [
        "<h2>Every recorded latency</h2>",
        '<table id="latencies"><thead><tr><th>engine</th><th>provider</th><th>machine</th><th>batch</th><th>threads</th>'
        "<th>p50 ms</th><th>p90 ms</th><th>p99 ms</th><th>session ms</th><th>first ms</th><th>items/s</th>"
        "<th>peak RSS MB</th><th>source</th><th>measured</th></tr></thead><tbody>",
    ]
    for x in data["latencies"]:
        parts.append(
            f'<tr><td class="l">{e(x["engine"])}</td><td class="l">{e(short_name(x["provider"]))}</td>'
            f'<td class="l">{e(x.get("machine", "?"))}</td><td>{x.get("batch", 1)}</td><td>{x.get("threads") or "default"}</td>'
            + _num(x["p50_ms"], ".3f") + _num(x.get("p90_ms"), ".3f") + _num(x.get("p99_ms"), ".3f")
            + _num(x.get("session_ms"), ".1f") + _num(x.get("first_ms"), ".1f") + _num(x.get("throughput"), ".1f")
            + _num(x.get("peak_rss_mb"), ".0f")
            + f'<td class="l">{e(x.get("source", "quantize"))}</td><td class="l">{e(x.get("measured", "?")[:16].replace("T", " "))}</td></tr>'
        )
    if not data["latencies"]:
        parts.append('<tr><td class="l" colspan="14">none: run <code>edgeai bench PKG --record</code></td></tr>')
    parts.append("</tbody></table>")
    parts.append('<p class="note">Latencies are measured by <code>edgeai export</code>, <code>optimize</code>, '
                 '<code>quantize</code> or <code>bench --record</code> (the "source" column), each variant in its own process; '
                 f'compare figures taken on the same machine only. {e(" ".join(latency_captions(data["latencies"], False)))}</p>')
    return parts


def latency_captions(entries: list[dict], this_one: bool = True) -> list[str]:
    """What a latency table's "this one" is (``this_one``: the table says so, as inspect's does),
    and what its calls ran (each entry's ``inputs``; older entries have none): a generation
    package's figures are one decode step, its items/s tokens/s."""
    lines = []
    if this_one and any(is_this_machine(x.get("machine")) for x in entries):
        lines.append(f"this one: {machine_id()}.")
    timed = sorted({x["inputs"] for x in entries if x.get("inputs")})
    if timed:
        lines.append(f"timed on: {'; '.join(timed)}.")
    return lines


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:8]}")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    except OSError as e:  # a read-only folder, /proc, /sys: the file named, not its folder (review)
        raise InputError(f"{path} cannot be written: {e.strerror or e}.") from None
    finally:
        tmp.unlink(missing_ok=True)


def write_report(pkg: Package, output: str | os.PathLike, png: bool = False,
                 warn: Callable[[str], None] | None = None, damaged: dict[str, str] | None = None,
                 damaged_files: dict[str, str] | None = None) -> list[Path]:
    """Write the page (and with ``png`` the charts as ``<stem>-latency.png``/``-error.png``/``-tradeoff.png``);
    ``damaged`` (:func:`damaged_variants`) and ``damaged_files`` (``Package.damaged_assets``): when
    the caller has them already (each hashes files)."""
    output = given = Path(output)  # the charts are named after the name given, a link's too
    if output.exists() and not output.is_file() and not output.is_dir():
        raise InputError(f"{output} is not a regular file (a pipe or a device); give the report's file name, e.g. report.html.")
    if output.is_symlink():  # written through, as a shell's > does, not replaced by a file of its own
        output = Path(os.path.realpath(output))
    if output.is_dir():
        raise InputError(f"{output} is a directory; give the report's file name, e.g. {output / 'report.html'}.")
    if not output.parent.is_dir():
        raise InputError(f"{output.parent} is a file, not a directory." if output.parent.exists() else f"The directory {output.parent} does not exist.")
    data = ladder(pkg, damaged, damaged_files)
    plt = _pyplot()
    if plt is None and png:
        raise DependencyError("--png draws the charts with matplotlib: pip install 'edgeai[report]'.")
    note, svgs, pngs = None, {}, {}
    if plt is None:
        note = "Charts need matplotlib: pip install 'edgeai[report]'."
        if warn:
            warn(f"{note} The page has the tables only.")
    else:
        from ._charts import charts as _charts

        figs = _charts(data, plt)
        for name, fig in figs.items():
            svgs[name] = _svg(fig)
            if png:
                buf = io.BytesIO()
                fig.savefig(buf, format="png", dpi=150)
                pngs[given.with_name(f"{given.stem}-{name}.png")] = buf.getvalue()
            plt.close(fig)
    # charts' names checked first, then the page written before them: charts were left without it (review)
    if taken := next((t for t in pngs if t.is_dir()), None):
        raise InputError(f"{taken} is a directory, and --png writes the chart of that name there; move it or name the report otherwise.")
    for target, blob in {output: render(data, svgs, note).encode("utf-8"), **pngs}.items():
        _atomic_write(target, blob)
    return [given, *pngs]
