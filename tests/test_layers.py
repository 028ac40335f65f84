"""Which runtime modules may reach the build side (edgeai.export, edgeai.quantize).

The runtime (``import edgeai``, ``edgeai.load``, ``edgeai run``) needs only numpy, onnx,
onnxruntime, pillow, tokenizers, typer and jinja2 (chat templates); torch lives behind edgeai.export and edgeai.quantize.
This test names the few runtime modules allowed to import them (always inside a function, at the
moment a build is asked for); that nothing else loads them at run time is checked by
tests/test_runtime.py::test_runtime_imports_no_torch, which runs ``edgeai.load`` and ``edgeai run``
in a fresh process and looks at ``sys.modules``.
"""

from __future__ import annotations

import ast
from pathlib import Path

RUNTIME = Path(__file__).resolve().parents[1] / "edgeai"
BUILD_SIDE = ("edgeai.export", "edgeai.quantize")

ALLOWED = {
    "edgeai/home.py": "builds a built-in package on first use",
    "edgeai/cli/build.py": "the export, optimize and quantize commands",
    "edgeai/_bench_worker.py": "rebuilds the PyTorch reference in bench --against torch's own process",
}


def _module_name(path: Path) -> str:
    parts = path.relative_to(RUNTIME.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _package_of(path: Path) -> str:
    name = _module_name(path)
    return name if path.name == "__init__.py" else name.rpartition(".")[0]


def _imported(code: str, package: str) -> set[str]:
    """Every module an ``import`` / ``from ... import`` names, at any depth, made absolute."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(code)):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                anchor = parts[: len(parts) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            names.add(base)
            names.update(f"{base}.{a.name}" for a in node.names)  # from edgeai import export
    return names


def _reaches_build_side(names: set[str]) -> bool:
    return any(n == side or n.startswith(side + ".") for n in names for side in BUILD_SIDE)


def test_only_the_allow_list_imports_export_or_quantize():
    offenders = sorted(
        str(path.relative_to(RUNTIME.parent))
        for path in RUNTIME.rglob("*.py")
        if _reaches_build_side(_imported(path.read_text(encoding="utf-8"), _package_of(path)))
    )
    assert set(offenders) <= set(ALLOWED), [p for p in offenders if p not in ALLOWED]


def test_the_scan_sees_relative_nested_and_from_imports():
    nested = "def f():\n    from .. import quantize\n"
    assert _reaches_build_side(_imported(nested, "edgeai.cli"))
    assert _reaches_build_side(_imported("from .export.reference import x\n", "edgeai"))
    assert _reaches_build_side(_imported("from edgeai import export\n", "edgeai.cli"))
    assert _reaches_build_side(_imported("import edgeai.quantize.steps\n", "edgeai"))
    assert not _reaches_build_side(_imported("from . import exporting\nimport edgeai.data\n", "edgeai"))
    assert _package_of(RUNTIME / "cli" / "run.py") == "edgeai.cli"
    assert _package_of(RUNTIME / "tasks" / "__init__.py") == "edgeai.tasks"
