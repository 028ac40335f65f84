"""`edgeai doctor`: every compiled-in provider is tried on a real one-node session."""

from __future__ import annotations

import json

import pytest

from conftest import cli
from edgeai import providers


def test_doctor_tries_every_provider_and_agrees_with_edgeai():
    r = cli("doctor", "--json")
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    names = [p["name"] for p in d["providers"]]
    assert names[-1] == providers.CPU and set(names) <= set(d["onnxruntime"]["compiled_in"])
    for p in d["providers"]:
        # the doctor's verdict is the one edgeai.load acts on
        assert p["starts"] == (providers.unavailable_reason(p["name"]) is None), p
        assert p["starts"] or p["reason"]
    cpu = d["providers"][-1]
    assert cpu["starts"] and cpu["reason"] is None
    assert d["auto"] == next(p["name"] for p in d["providers"] if p["starts"])
    if any(n != providers.CPU for n in d["onnxruntime"]["compiled_in"]):
        assert {lib["library"] for lib in d["libraries"]} >= {"CUDA runtime", "cuDNN", "TensorRT"}
    assert isinstance(d["gpus"], list) and (d["gpus"] or d["gpu_note"])


def test_doctor_human_output_names_what_is_missing():
    r = cli("doctor")
    assert r.returncode == 0, r.stderr
    assert "CPUExecutionProvider" in r.stdout and 'provider="auto" runs on' in r.stdout
    reason = providers.unavailable_reason(providers.CUDA)
    if reason:  # a machine without CUDA: the reason the runtime gives is shown
        assert reason in r.stdout


@pytest.mark.gpu
def test_doctor_on_a_gpu_machine():
    if providers.unavailable_reason(providers.CUDA) is not None:
        pytest.skip("no working CUDA here")
    d = json.loads(cli("doctor", "--json").stdout)
    cuda = next(p for p in d["providers"] if p["name"] == providers.CUDA)
    assert cuda["starts"] and d["gpus"], d
