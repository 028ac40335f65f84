"""``hf``: any Hugging Face checkpoint, exported by Optimum (``edgeai export --model DIR --task T``).

Image classification (ViT, DeiT, ConvNeXt, ResNet, MobileNet, EfficientNet, Swin, ...), text
classification (single- and multi-label, sentence pairs) and token classification get the
runtime's pre/post-processing from the checkpoint's own files; feature extraction of a BERT-family
encoder is ``bert``'s export (sentence embeddings); any other task Optimum exports is a
``tensor`` package (raw inputs and outputs). The built-in ``bert`` keeps its own exporter
(TorchScript with eager attention, which ONNX Runtime's transformer optimizer fuses).
"""

from __future__ import annotations

from pathlib import Path

from edgeai.families import Budget, Family, Option

TASKS = ("image-classification", "text-classification", "token-classification", "text-generation", "text2text-generation",
         "tensor")
FAMILY = Family(
    "hf", "image-classification", aliases=("hf",), hooks=__name__, rank=3, tasks=TASKS,
    fx_traceable=False,  # transformers' models branch on their config and inputs, which plain torch.fx cannot trace
    description="any Hugging Face checkpoint (a directory, or a hub id in the local cache), exported by Optimum",
    budget=Budget("top1_agreement", 0.99, "top-1 agreement with fp32 on held-out inputs"),
    tolerance=1e-4,
    options=(
        Option("model", "a local Hugging Face directory or cached hub id."),
        Option("task", "the checkpoint's task, as Optimum names it [default: from its architecture]."),
    ),
)
TOKEN_BUDGET = Budget("entity_f1", 0.98, "entity-level F1 against fp32's entities on held-out sentences",
                      also={"top1_agreement": 0.99})
GENERATION_BUDGET = Budget("top1_agreement", 0.99, "next-token top-1 agreement with fp32 over the held-out texts, "
                           "and a perplexity of their real next tokens at most ~5% above fp32's",
                           also={"perplexity_kept": 0.95})
TENSOR_BUDGET = Budget("cosine_min", 0.99, "lowest cosine similarity of the outputs to fp32's on held-out inputs")


def build(out, precision: str = "int8", progress=None, model=None, task=None):
    """Export ``model`` for ``task`` with Optimum's exporter, validated against PyTorch on real
    photos or sentences (Optimum's dummy inputs for tensor tasks)."""
    from edgeai.errors import InputError
    from edgeai.export import hf
    from edgeai.export.exporter import Source, Tolerance, export, say
    from edgeai.export.transformer import SENTENCE_ENCODERS, cache_revision

    if model is None:
        raise InputError("The hf family exports a Hugging Face checkpoint: pass --model DIR_OR_CACHED_ID.")
    from edgeai.atomic import check_destination

    ck = hf.inspect(model, task)
    if out is None:
        out = ck.name  # ./NAME/, like the built-ins
        if Path(out).resolve() == Path(ck.path).resolve():
            raise InputError(f"Without -o the package would go to ./{out}, the checkpoint's own folder; give it "
                             f"another with -o DIR.")
    check_destination(out, ck.name)  # before minutes of export
    if ck.task == "feature-extraction" and ck.model_type in SENTENCE_ENCODERS:
        # A BERT-family encoder's features: what `export bert --model` makes (mean-pooled,
        # L2-normalized sentence embeddings, checked and quantized on real sentences), not raw
        # hidden states checked on Optimum's dummy inputs and measured on seeded noise.
        from . import transformer

        say(progress, f"{ck.name} is a {ck.model_type} encoder: exporting sentence embeddings, as edgeai export bert --model does")
        return transformer.build(out, precision, progress, model=model, task="feature-extraction")
    say(progress, f"loading {ck.name} from {ck.path} (PyTorch, {ck.task})")
    torch_model = hf.load(ck)
    if ck.task in ("text-generation", "text2text-generation"):
        return _generation(out, precision, progress, ck, torch_model)
    if ck.labels == [] and ck.task in hf.RUNTIME_TASKS:  # config.json leaves transformers' default labels out
        id2label = torch_model.config.id2label
        ck.labels = [str(id2label[i]) for i in range(torch_model.config.num_labels)]
    config = hf.onnx_config(torch_model, ck)
    names, outputs = list(config.inputs), list(config.outputs)
    src = Source(
        module=hf.outputs_module(torch_model, names, outputs), name=ck.name, description="", task=ck.task,
        example={}, batches=[], tolerance=Tolerance(max(float(config.ATOL_FOR_VALIDATION), FAMILY.tolerance), "max_abs_diff"),
        provenance={"source": ck.source, "revision": cache_revision(ck.path, ck.source), "architecture": ck.architecture},
        versions=("transformers", "optimum"),
        recipe={"optimum_task": ck.task},
    )

    def write(path):
        say(progress, f"exporting to ONNX (Optimum's exporter, {type(config).__name__}; dynamic "
                      f"{'/'.join(sorted({a for axes in config.inputs.values() for a in axes.values()}))})")
        return "optimum", hf.write_onnx(torch_model, config, path)

    src.write_onnx = write
    if ck.task == "image-classification":
        _image(src, ck, names)
    elif ck.task in ("text-classification", "token-classification"):
        _text(src, ck, names)
    else:
        _tensor(src, ck, config)
    return export(FAMILY, src, out, precision, progress)


def _generation(out, precision, progress, ck, torch_model):
    """A decoder-only model with its KV cache (edgeai.generation runs it), validated step by step."""
    from edgeai.data.texts import HELD_OUT
    from edgeai.export import generation, hf
    from edgeai.export import transformer as tr
    from edgeai.export.transformer import cache_revision
    from edgeai.export.exporter import Source, Tolerance, export, say

    config = generation.onnx_config(torch_model, ck)
    tok, _, _ = tr.load_tokenizer(ck)
    tolerance = max(float(config.ATOL_FOR_VALIDATION), FAMILY.tolerance)
    max_length = tr.max_length(ck.path, ck.config)
    state: dict = {}

    seq2seq = ck.task == "text2text-generation"
    assets = {"tokenizer.json": lambda path: tok.save(str(path))}

    def write(path):
        if seq2seq:  # written with the encoder's graph, an asset (below)
            return "optimum", state["opset"]
        say(progress, f"exporting to ONNX (Optimum's exporter, {type(config).__name__} with the KV cache as inputs and outputs)")
        opset = hf.write_onnx(torch_model, config, path)
        generation.keep_last_logits(path)
        state["spec"] = generation.spec(torch_model, config, path, tok, max_length)
        return "optimum", opset

    def write_both(path):
        say(progress, f"exporting to ONNX (Optimum's exporter, {type(config).__name__}: the decoder with the KV cache "
                      "as inputs and outputs, and the encoder with the cross-attention cache)")
        model_path = path.parent / "model.onnx"
        state["opset"] = generation.write_seq2seq(torch_model, config, model_path)
        state["spec"] = generation.spec(torch_model, config, model_path, tok, max_length)

    if seq2seq:
        assets[generation.ENCODER] = write_both

    def validate(path):
        prompts = [t for t in HELD_OUT if len(t) > 3][:8]
        return generation.validate(torch_model, path, state["spec"], path.parent / "tokenizer.json", prompts, tolerance)

    what = "text-to-text generation (an encoder-decoder)" if seq2seq else "text generation"
    src = Source(
        module=None, name=ck.name, task=ck.task, example={}, batches=[], tolerance=Tolerance(tolerance),
        description=f"{ck.name} ({ck.model_type}): {what} with a KV cache (edgeai generate); exported with Optimum.",
        checked_on=f"(the logits of the first step and of {generation.VALIDATION_STEPS} cached steps, 8 sentences)",
        provenance={"source": ck.source, "revision": cache_revision(ck.path, ck.source), "architecture": ck.architecture},
        versions=("transformers", "optimum"),
        recipe={"optimum_task": f"{ck.task}-with-past"}, write_onnx=write, validate=validate,
        budget=GENERATION_BUDGET.as_manifest(),
        manifest_extra=lambda path: {"generation": {**state["spec"], **generation.tokenizer_settings(ck.path)}},
        assets=assets,
    )
    return export(FAMILY, src, out, precision, progress)


def _labels(src, ck) -> None:
    """labels.txt, the description, and a classifier's post-processing (token classification replaces it)."""
    from edgeai.export.transformer import activation

    src.postprocess = {"type": "classification", "output": "logits", "labels": "labels.txt",
                       "activation": activation(ck.config, len(ck.labels)), "top_k": min(5, len(ck.labels))}
    src.assets["labels.txt"] = ("\n".join(ck.labels) + "\n").encode("utf-8")
    shown = ", ".join(ck.labels[:6]) + ("..." if len(ck.labels) > 6 else "")
    src.description = f"{ck.name} ({ck.model_type}): {ck.task} ({shown}); exported with Optimum."


def _image(src, ck, names: list[str]) -> None:
    from edgeai.data.photos import CALIBRATION, HELD_OUT, image_set
    from edgeai.export import hf
    from edgeai.preprocess import ImagePreprocessor

    src.preprocess = hf.image_preprocess(ck.path)
    _labels(src, ck)
    prep = ImagePreprocessor(src.preprocess)
    # Optimum leaves channels and size dynamic; the package takes what its processing makes.
    src.inputs = [{"name": names[0], "dtype": "float32", "shape": ["batch_size", 3, prep.crop_h, prep.crop_w]}]
    src.outputs = [{"name": "logits", "dtype": "float32", "shape": ["batch_size", len(ck.labels)]}]
    images = [im for _, im in image_set(CALIBRATION + HELD_OUT, per_photo=1, seed=7)]
    hf.check_image_preprocess(ck.path, src.preprocess, images[:4])
    src.example = {names[0]: prep.batch(images[:1])}
    src.batches = [{names[0]: prep.batch(images[i : i + 8])} for i in range(0, min(len(images), 32), 8)]
    src.checked_on = f"on {min(len(images), 32)} real photos"


def _text(src, ck, names: list[str]) -> None:
    from edgeai.data.texts import HELD_OUT, TUNING
    from edgeai.export import transformer as tr

    from . import _text as text

    tok, pad_id, pad_token = tr.load_tokenizer(ck)
    src.preprocess = tr.text_preprocess(ck.config, tr.max_length(ck.path, ck.config), pad_id, pad_token)
    src.assets["tokenizer.json"] = lambda path: tok.save(str(path))
    _labels(src, ck)
    if ck.task == "token-classification":
        src.postprocess = {"type": "token-classification", "output": "logits", "labels": "labels.txt",
                           "aggregation": "simple", "ignore": ["O"]}
        src.budget = TOKEN_BUDGET.as_manifest()
    pre = src.preprocess
    texts = TUNING + HELD_OUT
    src.example = lambda stage: text.tokenizer(stage, pre, names)(["edgeai exports this sentence to ONNX, with padding.", "short"])
    src.batches = lambda stage: text.batches(text.tokenizer(stage, pre, names), texts, [1] + [8] * len(texts))
    src.checked_on = "on padded batches of real sentences"


def _tensor(src, ck, config) -> None:
    """A task without runtime processing: raw tensors in and out, validated on Optimum's dummy inputs."""
    import numpy as np

    dummy = [{k: np.asarray(v) for k, v in config.generate_dummy_inputs(framework="np", batch_size=b).items()} for b in (1, 2)]
    src.example, src.batches = dummy[0], dummy
    src.checked_on = "on Optimum's dummy inputs"
    src.budget = TENSOR_BUDGET.as_manifest()
    src.description = (f"{ck.name} ({ck.model_type}): {ck.task}, exported with Optimum. edgeai has no pre/post-processing "
                       "for this task: the package takes and gives raw tensors (Pipeline.run / predict of a dict of arrays).")


def reference(pkg):
    """The checkpoint a package was exported from, as the graph sees it (``bench --against torch``)."""
    from edgeai.errors import InputError
    from edgeai.export import hf
    from edgeai.export.transformer import source_model

    ck = hf.inspect(source_model(pkg), pkg.manifest["variants"]["fp32"].get("recipe", {}).get("optimum_task"))
    if ck.task in ("text-generation", "text2text-generation"):
        raise InputError("bench --against torch times one call; for text generation, benchmarks/generate.py "
                         "compares whole generations with transformers' generate.")
    torch_model = hf.load(ck)
    config = hf.onnx_config(torch_model, ck)
    return hf.outputs_module(torch_model, list(config.inputs), list(config.outputs))
