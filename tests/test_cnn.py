"""End to end on the real EfficientNet-Lite0 package, built the way a user's first run builds it."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

import edgeai
from conftest import CAT, CAT_CLASSES, COFFEE, cli
from edgeai.package import Package

pytestmark = pytest.mark.slow


def test_first_run_builds_the_default_package_with_progress(first_run, cnn_pkg):
    assert first_run.returncode == 0, first_run.stderr[-3000:]
    assert "First use of efficientnet-lite0" in first_run.stderr
    for stage in ("exporting to ONNX", "validating ONNX fp32 against PyTorch", "calibrating static INT8", "timing every variant"):
        assert stage in first_run.stderr
    doc = json.loads(first_run.stdout)
    assert doc["model"] == "efficientnet-lite0" and doc["provider"] == "CPUExecutionProvider"
    assert doc["results"][0]["top_k"][0]["index"] in CAT_CLASSES
    assert len(doc["results"][0]["top_k"]) == 5


def test_manifest_records_the_measurements(cnn_pkg):
    pkg = Package.open(cnn_pkg)
    v = pkg.variants
    assert set(v) == {"fp32", "optimized", "int8"}
    assert v["fp32"]["accuracy"]["max_abs_diff"] < 1e-3 and v["fp32"]["accuracy"]["top1_agreement"] == 1.0
    assert v["optimized"]["made_from"] == "fp32" and v["optimized"]["recipe"]["level"] == "extended"
    int8 = v["int8"]
    assert int8["recipe"]["method"] == "static" and int8["recipe"]["per_channel"] is True
    assert int8["recipe"]["calibration"]["samples"] >= 100
    assert int8["recipe"]["calibration"]["method"] == "minmax" and int8["recipe"]["float_nodes"] == ["/_conv_stem/Conv"]
    # The AVX2 int16-saturation guard finds the layers that overflow and gives them 7-bit weights;
    # without it agreement was 0.85-0.87 (benchmarks/results/cnn.md).
    assert "/_blocks.0/_project_conv/Conv" in int8["recipe"]["reduce_range_nodes"]
    # Measured on 355 distinct photos (edgeai.data.photo_set): 0.89 [0.85, 0.92] on an AVX-512 VNNI
    # EPYC; post-training recipes stay near 0.90 (README, "INT8"), below the 0.99 budget, so auto
    # keeps fp32 for this model until a recipe reaches it.
    acc = int8["accuracy"]
    assert 0.8 <= acc["top1_agreement"] <= 1.0 and acc["samples"] >= 200 and acc["held_out"] == "debian-photos-v1"
    lo, hi = acc["top1_agreement_ci95"]
    assert lo <= acc["top1_agreement"] <= hi
    assert int8["size"] < v["fp32"]["size"] / 3
    for info in v.values():  # the default thread count, and one thread too where the model is that quick
        assert 1 <= len(info["latency"]) <= 2 and any(not e["threads"] for e in info["latency"].values())
        assert all(e["provider"] == "CPUExecutionProvider" and e["p50_ms"] > 0 for e in info["latency"].values())
    assert len(pkg.labels) == 1000 and pkg.labels[281] == "tabby" and pkg.labels[967] == "espresso"


@pytest.mark.parametrize("variant", ["fp32", "optimized", "int8"])
def test_real_photos_give_sensible_classes(cnn_pkg, variant):
    pipe = edgeai.load(cnn_pkg, variant=variant, provider="cpu")
    cat, coffee = pipe.predict([str(CAT), str(COFFEE)])
    assert cat["top_k"][0]["index"] in CAT_CLASSES, cat
    assert coffee["top_k"][0]["label"] == "espresso", coffee


def test_auto_chooses_int8_only_within_budget(cnn_pkg):
    pkg = Package.open(cnn_pkg)
    pipe = edgeai.load(cnn_pkg)
    within = pkg.variants["int8"]["accuracy"]["top1_agreement"] >= pkg.manifest["budget"]["min"]
    if not within:
        assert pipe.variant != "int8"
    lat = {n: min(e["p50_ms"] for e in v["latency"].values()) for n, v in pkg.variants.items()}
    lat = {n: t for n, t in lat.items() if n != "int8" or within}
    # the fastest within budget, unless an exact variant is within 5% of it (a lossy one must pay)
    fastest = min(lat.values())
    assert pipe.variant == min(lat, key=lambda n: (lat[n] > fastest * 1.05, n == "int8", lat[n]))


def test_batch_equals_single_and_inputs_agree(cnn_pkg):
    pipe = edgeai.load(cnn_pkg, variant="fp32")
    frame = np.asarray(Image.open(CAT).convert("RGB"))
    single = pipe.predict(str(CAT))
    batch = pipe.predict([str(COFFEE), Image.open(CAT), frame])
    for r in batch[1:]:
        assert [c["index"] for c in r["top_k"]] == [c["index"] for c in single["top_k"]]
        np.testing.assert_allclose([c["score"] for c in r["top_k"]], [c["score"] for c in single["top_k"]], rtol=1e-5, atol=1e-6)
    feed = pipe.preprocess([str(CAT)])
    raw = pipe.session._session.run(None, feed)[0]
    np.testing.assert_allclose(pipe.run(feed)["logits"], raw, rtol=1e-5)


def test_cli_run_reuses_the_package_and_imports_no_torch(cnn_pkg):
    code = (
        "import sys\nfrom edgeai.cli import app\n"
        f"app(['run', {str(CAT)!r}], standalone_mode=False)\n"
        "assert 'torch' not in sys.modules and 'transformers' not in sys.modules\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "First use" not in out.stderr
    assert "variant" in out.stdout and "provider CPUExecutionProvider" in out.stdout
    assert any(name in out.stdout for name in ("tabby", "tiger cat", "Egyptian cat"))


def test_inspect_shows_variants_and_operators(cnn_pkg):
    out = cli("inspect", str(cnn_pkg))
    assert out.returncode == 0, out.stderr
    for text in ("efficientnet-lite0", "int8", "optimized", "QuantizeLinear", "Conv", "top1_agreement", "pixel_values"):
        assert text in out.stdout, text
    doc = json.loads(cli("inspect", "cnn", "--json").stdout)
    assert doc["operators"]["int8"]["DequantizeLinear"] > 50
    # a variant auto will not choose for its accuracy says so, and why
    pkg = Package.open(cnn_pkg)
    missed = pkg.variants["int8"]["accuracy"]["top1_agreement"] < pkg.manifest["budget"]["min"]
    assert ("int8 \N{EM DASH} misses the budget top1_agreement >= 0.99 (has 0." in out.stdout) == missed, out.stdout
