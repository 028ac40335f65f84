"""--budget: the user's accuracy threshold, recorded in the package and obeyed by variant=auto."""

from __future__ import annotations

import json

from conftest import CAT, cli, make_tiny_package


def test_quantize_budget_is_recorded_and_obeyed(tmp_path):
    pkg = make_tiny_package(tmp_path / "tiny")
    r = cli("quantize", str(pkg), "--method", "dynamic", "--budget", "0.5")
    assert r.returncode == 0, r.stderr
    m = json.loads((pkg / "manifest.json").read_text())
    assert m["budget"]["min"] == 0.5 and m["budget"]["set_by"] == "user" and m["budget"]["metric"] == "top1_agreement"
    # A threshold int8 cannot meet: recorded, said on the summary line, and auto keeps away from it.
    r = cli("quantize", str(pkg), "--method", "dynamic", "--budget", "1.0")
    m = json.loads((pkg / "manifest.json").read_text())
    if m["variants"]["int8"]["accuracy"]["top1_agreement"] < 1.0:
        assert "misses the budget" in r.stdout
        doc = json.loads(cli("run", "--model", str(pkg), "--json", str(CAT)).stdout)
        assert doc["variant"] != "int8"


def test_a_budget_outside_0_1_is_one_sentence(tmp_path):
    pkg = make_tiny_package(tmp_path / "tiny")
    before = (pkg / "manifest.json").read_text()
    r = cli("quantize", str(pkg), "--budget", "1.5")
    assert r.returncode == 1 and "--budget is a threshold for top1_agreement, between 0 and 1; got 1.5." in r.stderr
    assert (pkg / "manifest.json").read_text() == before


def test_export_budget_is_recorded(tmp_path):
    net = tmp_path / "net.py"
    net.write_text("import torch\ndef make():\n    torch.manual_seed(0)\n    return torch.nn.Sequential(torch.nn.Linear(4, 3))\n")
    r = cli("export", f"{net}:make", "--input", "x:2,4:float32", "--dynamic", "x:0:batch", "-o", str(tmp_path / "p"),
            "--budget", "0.995")
    assert r.returncode == 0, r.stderr
    m = json.loads((tmp_path / "p" / "manifest.json").read_text())
    assert m["budget"]["min"] == 0.995 and m["budget"]["set_by"] == "user"
    r = cli("export", "lstm", "--budget", "2", "-o", str(tmp_path / "q"))
    assert r.returncode == 1 and "between 0 and 1" in r.stderr and not (tmp_path / "q").exists()


def test_budget_on_a_plain_onnx_file_is_kept(tmp_path):
    """The .onnx file is wrapped into a package once; the budget set on it is the one recorded."""
    from conftest import tiny_classifier

    tiny_classifier(tmp_path / "m.onnx")
    r = cli("quantize", str(tmp_path / "m.onnx"), "--method", "dynamic", "--budget", "0.9")
    assert r.returncode == 0, r.stderr
    m = json.loads((tmp_path / "m" / "manifest.json").read_text())
    assert m["budget"]["min"] == 0.9 and m["budget"]["set_by"] == "user" and "int8" in m["variants"]


def test_a_nan_difference_never_passes():
    import numpy as np

    from edgeai.data.compare import check_close, compare

    ref, bad = np.ones((2, 3), np.float32), np.ones((2, 3), np.float32)
    bad[0, 1] = np.nan
    assert compare({"y": ref}, {"y": bad}, "tensor")["max_abs_diff"] == float("inf")
    import pytest

    from edgeai.errors import ExportError

    with pytest.raises(ExportError):
        check_close([ref], [bad], "at the example", 1e-4)


def test_an_empty_or_corrupt_array_file_is_one_sentence(tmp_path):
    import pytest

    from edgeai.data.feeds import load_arrays
    from edgeai.errors import InputError

    (tmp_path / "e.npy").write_bytes(b"")
    (tmp_path / "c.npz").write_bytes(b"PK\x03\x04 not a zip")
    for f, names in (("e.npy", ["x"]), ("c.npz", ["x", "y"])):
        with pytest.raises(InputError, match="not a readable numpy file"):
            load_arrays(tmp_path / f, names)
