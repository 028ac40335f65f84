"""CPU sessions: the load-time fusions edgeai leaves out, and the per-machine optimized graph it saves."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from edgeai import _ortcache
from edgeai.package import sha256_file
from edgeai.session import Session


def _residual_layernorm(path) -> None:
    """y = LayerNorm(x + r): the pattern ONNX Runtime fuses into SkipLayerNormalization at load time."""
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.normal(size=8).astype(np.float32), "gamma"),
             numpy_helper.from_array(rng.normal(size=8).astype(np.float32), "beta")]
    nodes = [helper.make_node("Add", ["x", "r"], ["s"]),
             helper.make_node("LayerNormalization", ["s", "gamma", "beta"], ["y"], axis=-1, epsilon=1e-5)]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info(n, TensorProto.FLOAT, [1, 4, 8]) for n in ("x", "r")],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 8])], inits)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), str(path))


def _ops(path) -> set[str]:
    return {n.op_type for n in onnx.load(str(path)).graph.node}


def test_cpu_sessions_leave_skip_layernorm_unfused(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGEAI_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("EDGEAI_ORT_CACHE", raising=False)
    model = tmp_path / "m.onnx"
    _residual_layernorm(model)
    # What ONNX Runtime does by itself: the fusion edgeai turns off (its CPU kernel is slow).
    so = ort.SessionOptions()
    so.optimized_model_filepath = str(tmp_path / "plain.onnx")
    plain = ort.InferenceSession(str(model), so, providers=["CPUExecutionProvider"])
    assert "SkipLayerNormalization" in _ops(tmp_path / "plain.onnx")

    spec = [{"name": n, "dtype": "float32", "shape": [1, 4, 8]} for n in ("x", "r")]
    feed = {n: np.random.default_rng(i).normal(size=(1, 4, 8)).astype(np.float32) for i, n in enumerate(("x", "r"))}
    sha = sha256_file(model)
    # A graph an earlier edgeai saved for this variant under its untagged name, and another variant's.
    untagged = _ortcache._cache_file(sha).name.replace(f"-{_ortcache._FUSIONS_TAG}", "")
    folder = tmp_path / "home" / "ort-cpu"
    folder.mkdir(parents=True)
    for name in (untagged, untagged.replace(".onnx", ".json"), "0" * 20 + untagged[20:]):
        (folder / name).write_bytes(b"old")
    first = Session(model, spec, [{"name": "y"}], provider="cpu", model_sha256=sha)
    saved = sorted(p.name for p in folder.iterdir())
    assert saved == sorted([_ortcache._cache_file(sha).name, _ortcache._cache_file(sha).with_suffix(".json").name,
                            "0" * 20 + untagged[20:]])  # this variant's superseded graph is gone, the other kept
    saved = [folder / _ortcache._cache_file(sha).name]
    assert "SkipLayerNormalization" not in _ops(saved[0]) and "LayerNormalization" in _ops(saved[0])
    # The saved graph is what later sessions load; both give ONNX Runtime's own answer.
    again = Session(model, spec, [{"name": "y"}], provider="cpu", model_sha256=sha)
    want = plain.run(None, feed)[0]
    for s in (first, again):
        np.testing.assert_allclose(s.run(feed)["y"], want, rtol=1e-5, atol=1e-5)


def test_saved_graphs_unused_for_a_month_are_removed(tmp_path, monkeypatch):
    """Each saved graph holds its variant's weights: those of rebuilt or deleted packages, or of an
    earlier ONNX Runtime, go once no session has loaded them for UNUSED_DAYS; loading one keeps it."""
    import os
    import time

    monkeypatch.setenv("EDGEAI_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("EDGEAI_ORT_CACHE", raising=False)
    folder = tmp_path / "home" / "ort-cpu"
    folder.mkdir(parents=True)
    spec = [{"name": n, "dtype": "float32", "shape": [1, 4, 8]} for n in ("x", "r")]
    model = tmp_path / "a.onnx"
    _residual_layernorm(model)
    sha = sha256_file(model)
    Session(model, spec, [{"name": "y"}], provider="cpu", model_sha256=sha)  # saves a's graph
    mine = _ortcache._cache_file(sha)
    days = lambda n: time.time() - n * 86400  # noqa: E731
    os.utime(mine.with_suffix(".json"), (days(2), days(2)))
    Session(model, spec, [{"name": "y"}], provider="cpu", model_sha256=sha)  # loads it: marked as used today
    assert time.time() - mine.with_suffix(".json").stat().st_mtime < 60

    old = {"1" * 20 + "-ort1.0.0-x.onnx": 40, "1" * 20 + "-ort1.0.0-x.json": 40,  # unused for 40 days
           "2" * 20 + "-ort1.0.0-x.onnx": 40, "2" * 20 + "-ort1.0.0-x.json": 3,  # loaded 3 days ago
           "3" * 20 + "-ort1.0.0-x.onnx": 40,  # no sidecar (never trusted), written 40 days ago
           "4" * 20 + "-ort1.0.0-x.json": 40,  # a sidecar whose graph is gone
           "5" * 20 + "-ort1.0.0-x.onnx.77.tmp": 2}  # a killed process's temporary file
    for name, age in old.items():
        (folder / name).write_bytes(b"old")
        os.utime(folder / name, (days(age), days(age)))
    other = tmp_path / "b.onnx"
    _residual_layernorm(other)
    m = onnx.load(str(other))  # the same graph under another sha256
    m.doc_string = "b"
    onnx.save(m, str(other))
    Session(other, spec, [{"name": "y"}], provider="cpu", model_sha256=sha256_file(other))  # saves: prunes
    left = {p.name for p in folder.iterdir()}
    assert left == {mine.name, mine.with_suffix(".json").name, "2" * 20 + "-ort1.0.0-x.onnx", "2" * 20 + "-ort1.0.0-x.json",
                    _ortcache._cache_file(sha256_file(other)).name, _ortcache._cache_file(sha256_file(other)).with_suffix(".json").name}


def test_the_saved_graph_is_trusted_under_a_group_writable_umask(tmp_path, monkeypatch):
    # umask 002 (Debian's default for ordinary users) made the sidecar and the hash stamps 0o664,
    # which owned() never trusts: every load optimized and wrote the graph again (review)
    import os

    monkeypatch.setenv("EDGEAI_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("EDGEAI_ORT_CACHE", raising=False)
    spec = [{"name": n, "dtype": "float32", "shape": [1, 4, 8]} for n in ("x", "r")]
    model = tmp_path / "a.onnx"
    _residual_layernorm(model)
    sha = sha256_file(model)
    old = os.umask(0o002)
    try:
        Session(model, spec, [{"name": "y"}], provider="cpu", model_sha256=sha)  # saves the graph
        saved = _ortcache._cache_file(sha)
        assert saved.stat().st_mode & 0o777 == 0o600 and saved.with_suffix(".json").stat().st_mode & 0o777 == 0o600
        os.utime(saved, (1e9, 1e9))
        Session(model, spec, [{"name": "y"}], provider="cpu", model_sha256=sha)  # loads it, does not write it again
        assert saved.stat().st_mtime == 1e9
    finally:
        os.umask(old)
