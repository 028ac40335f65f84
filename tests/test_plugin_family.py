"""The family registry, proven from outside: a family of its own, defined in this module and
registered the way a user's package would (an ``edgeai.families`` entry point in an installed
distribution's metadata), goes through export, quantize, run --json, bench --against torch,
report and a bulk run with no edit to edgeai.

The family: a seeded two-output regressor (``value`` and ``log_var``) that takes a line of eight
comma-separated numbers; its own pre-processor (``numbers``) parses the line, its own
post-processor (``regression``) gives ``{"value", "uncertainty"}``.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest

from edgeai.families import Budget, Family
from edgeai.errors import InputError

FEATURES = 8

FAMILY = Family(
    name="regressor",
    task="regression",
    tasks=("regression",),
    model="tiny-regressor",
    aliases=("regressor",),
    description="a seeded two-output regressor (test plugin)",
    inputs=({"name": "x", "dtype": "float32", "shape": ["batch", FEATURES]},),
    outputs=({"name": "value", "dtype": "float32", "shape": ["batch"]},
             {"name": "log_var", "dtype": "float32", "shape": ["batch"]}),
    preprocess={"type": "numbers", "options": {"features": FEATURES}},
    postprocess={"type": "regression", "options": {"value": "value", "log_var": "log_var"}},
    budget=Budget("cosine_min", 0.99, "lowest cosine of the outputs to fp32 on random inputs"),
    tolerance=1e-4,
    build="test_plugin_family:build",
    reference="test_plugin_family:reference",
    preprocessors={"numbers": "test_plugin_family:Numbers"},
    postprocessors={"regression": "test_plugin_family:Regression"},
)


class Numbers:
    """``"0.1, 2, -3, ..."`` (or a sequence of numbers) -> one float32 row per item."""

    kind = "text"

    def __init__(self, pkg, input_names):
        self.name = input_names[0]
        self.features = int(pkg.manifest["preprocess"]["options"]["features"])

    def row(self, item) -> np.ndarray:
        try:
            values = [float(v) for v in item.split(",")] if isinstance(item, str) else [float(v) for v in item]
        except (TypeError, ValueError):
            raise InputError(f"{item!r} is not {self.features} comma-separated numbers.") from None
        if len(values) != self.features:
            raise InputError(f"{item!r} has {len(values)} numbers; this model takes {self.features}.")
        return np.asarray(values, np.float32)

    def batch(self, items):
        return {self.name: np.stack([self.row(i) for i in items])}


class Regression:
    def __init__(self, spec, pkg):
        self.value, self.log_var = spec["options"]["value"], spec["options"]["log_var"]

    def __call__(self, outputs, k=None):
        spread = np.exp(0.5 * outputs[self.log_var].astype(np.float64))
        return [{"value": float(v), "uncertainty": float(s)} for v, s in zip(outputs[self.value], spread)]


def module():
    import torch

    class TwoHeads(torch.nn.Module):
        def __init__(self):
            super().__init__()
            torch.manual_seed(0)
            self.body = torch.nn.Sequential(torch.nn.Linear(FEATURES, 32), torch.nn.ReLU(), torch.nn.Linear(32, 2))

        def forward(self, x):
            y = self.body(x)
            return y[:, 0], y[:, 1]

    return TwoHeads().eval()


def example(pkg=None):
    return {"x": np.random.default_rng(0).standard_normal((4, FEATURES)).astype(np.float32)}


def reference(pkg):
    return module()


def build(out, precision: str = "int8", progress=None):
    """Export the regressor through edgeai's one export path (the plugin writes no export code)."""
    from edgeai.export.exporter import Source, Tolerance, export

    rng = np.random.default_rng(1)
    batches = [{"x": rng.standard_normal((n, FEATURES)).astype(np.float32)} for n in (1, 3, 16)]
    src = Source(module=module(), name=FAMILY.model, description=FAMILY.description, example=example(),
                 batches=batches, tolerance=Tolerance(1e-4, "max_rel_diff"), checked_on="on seeded inputs",
                 inputs=FAMILY.inputs, outputs=FAMILY.outputs, preprocess=FAMILY.preprocess,
                 postprocess=FAMILY.postprocess, provenance={"source": "tests/test_plugin_family.py (seeded)"})
    return export(FAMILY, src, out, precision, progress)


# -- the installed distribution that declares the entry point --------------------------------
@pytest.fixture(scope="module")
def plugin_env(tmp_path_factory):
    """A site directory holding a distribution's metadata with an ``edgeai.families`` entry point,
    as ``pip install`` of a package that declares one would leave it; PYTHONPATH puts it (and
    this module) on the path of every edgeai process the test starts."""
    from edgeai import families

    site = tmp_path_factory.mktemp("site")
    info = site / "edgeai_test_regressor-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: edgeai-test-regressor\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[edgeai.families]\nregressor = test_plugin_family:FAMILY\n")
    here = str(Path(__file__).resolve().parent)
    path = os.pathsep.join([str(site), here, os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    sys.path.insert(0, str(site))
    families.reload()
    yield {"PYTHONPATH": path}
    sys.path.remove(str(site))
    families.reload()


def _cli(plugin_env, *args, **kw):
    from conftest import cli

    r = cli(*args, env=plugin_env, **kw)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "Traceback" not in r.stderr
    return r


LINES = ["0.5, -1, 2, 0, 0.25, 3, -2, 1", "1,1,1,1,1,1,1,1", "-3, 0.1, 0.2, 0.3, 4, 5, -6, 0.7"]


def _torch_results(lines):
    import torch

    x = torch.tensor([[float(v) for v in line.split(",")] for line in lines])
    with torch.inference_mode():
        value, log_var = module()(x)
    return value.numpy(), np.exp(0.5 * log_var.numpy().astype(np.float64))


def test_the_entry_point_registers_the_family_and_its_processors(plugin_env):
    from edgeai import families

    fam = families.get("regressor")
    assert fam is FAMILY and families.resolve("tiny-regressor") is FAMILY and families.resolve("regressor") is FAMILY
    assert {"cnn", "transformer", "lstm", "custom", "regressor"} <= set(families.families())


@pytest.fixture(scope="module")
def regressor_pkg(plugin_env, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("plugin") / "reg"
    r = _cli(plugin_env, "export", "tiny-regressor", "-o", str(out), "--precision", "fp32")
    assert "wrote" in r.stdout
    return out


def test_export_writes_a_package_of_the_plugin_family(regressor_pkg):
    m = json.loads((regressor_pkg / "manifest.json").read_text())
    assert (m["family"], m["task"], m["postprocess"]["type"]) == ("regressor", "regression", "regression")
    assert [o["name"] for o in m["outputs"]] == ["value", "log_var"]
    assert set(m["variants"]) == {"fp32", "optimized"}
    assert m["variants"]["fp32"]["accuracy"]["max_rel_diff"] < 1e-4


def test_quantize_adds_int8_within_the_family_budget(plugin_env, regressor_pkg):
    _cli(plugin_env, "quantize", str(regressor_pkg))
    m = json.loads((regressor_pkg / "manifest.json").read_text())
    int8 = m["variants"]["int8"]
    assert int8["recipe"]["method"] == "dynamic" and int8["accuracy"]["cosine_min"] > 0.9


def test_run_json_uses_the_plugin_processors_and_matches_pytorch(plugin_env, regressor_pkg):
    doc = json.loads(_cli(plugin_env, "run", "--model", str(regressor_pkg), "--variant", "fp32", "--json", "--", *LINES).stdout)
    value, spread = _torch_results(LINES)
    assert [r["input"] for r in doc["results"]] == LINES
    np.testing.assert_allclose([r["value"] for r in doc["results"]], value, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose([r["uncertainty"] for r in doc["results"]], spread, rtol=1e-4)
    from conftest import cli

    r = cli("run", "--model", str(regressor_pkg), "1, 2, 3", env=plugin_env)
    assert r.returncode == 1 and "has 3 numbers; this model takes 8" in r.stderr and "Traceback" not in r.stderr


def test_bench_against_torch_uses_the_family_reference(plugin_env, regressor_pkg):
    doc = json.loads(_cli(plugin_env, "bench", str(regressor_pkg), "--variant", "fp32", "--against", "torch",
                          "--rounds", "1", "--runs", "5", "--json").stdout)
    engines = {r["engine"] for r in doc["results"]}
    assert engines == {"onnxruntime", "pytorch"}
    assert all(r["vs_torch"] > 0 for r in doc["results"] if r["engine"] == "onnxruntime")


def test_report_lists_every_variant(plugin_env, regressor_pkg, tmp_path):
    _cli(plugin_env, "report", str(regressor_pkg), "-o", str(tmp_path / "r.html"))
    html = (tmp_path / "r.html").read_text()
    m = json.loads((regressor_pkg / "manifest.json").read_text())
    assert all(name in html for name in m["variants"]) and "tiny-regressor" in html


def test_bulk_run_writes_a_line_per_input(plugin_env, regressor_pkg, tmp_path):
    lines = tmp_path / "rows.txt"
    lines.write_text("\n".join(LINES + ["not numbers"]) + "\n")
    from conftest import cli

    r = cli("run", "--model", str(regressor_pkg), str(lines), "--out", str(tmp_path / "out.jsonl"), env=plugin_env)
    assert r.returncode == 1 and "1 input(s) failed" in r.stderr  # the bad line, and only it
    records = [json.loads(x) for x in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert [r["text"] for r in records] == LINES + ["not numbers"]
    assert [r["input"] for r in records] == [f"{lines}:{i}" for i in range(1, 5)]
    assert all("value" in r for r in records[:3]) and "error" in records[3]


def test_load_by_name_builds_on_first_use_and_says_so(plugin_env, tmp_path):
    """A plugin's built-in model is built into $EDGEAI_HOME on first use, with progress on stderr."""
    import subprocess

    code = "import edgeai; p = edgeai.load('tiny-regressor'); print(p.predict('1,2,3,4,5,6,7,8')['value'])"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600, stdin=subprocess.DEVNULL,
                       env={**os.environ, **plugin_env, "EDGEAI_HOME": str(tmp_path)})
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stderr.splitlines()[0].startswith("edgeai: building tiny-regressor into ")
    float(r.stdout)
