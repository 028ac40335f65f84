"""Any Hugging Face checkpoint, exported by Optimum's ONNX exporter (PyPI ``optimum-onnx``).

Optimum knows hundreds of architectures: for each (model type, task) an ``OnnxConfig`` names
the inputs, the outputs, their dynamic axes and a validation tolerance, and its model patcher
makes the forward pass traceable. edgeai uses that exporter as it is (``export(model, config,
path)``) and keeps what is its own: the checkpoint found offline, the runtime pre/post-processing
read from the checkpoint's files into the manifest, validation against PyTorch on real inputs
(photos, sentences) through the runtime's own pre-processing, and the optimize/quantize chain.

Nothing is downloaded: a directory, or a hub id already in the local cache (``resolve``).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from edgeai.errors import DependencyError, ExportError, InputError
from edgeai.errors import shown as user_path

from .transformer import _read_json, resolve

# Tasks with a runtime pre/post-processing of their own; any other task Optimum exports becomes a
# ``tensor`` package (raw inputs and outputs), with a note saying so.
RUNTIME_TASKS = ("image-classification", "text-classification", "token-classification")
_RESAMPLE = {0: "nearest", 1: "lanczos", 2: "bilinear", 3: "bicubic", 4: "box", 5: "hamming"}  # PIL's numbers, as processors store them
# Image-processor settings this translation understands; another one set to change the pixels
# (e.g. do_pad) is refused rather than silently ignored.
_KNOWN = {"do_resize", "size", "resample", "do_center_crop", "crop_size", "crop_pct", "do_rescale", "rescale_factor",
          "do_normalize", "image_mean", "image_std", "do_convert_rgb", "image_processor_type", "feature_extractor_type",
          "processor_class", "_processor_class", "default_to_square", "data_format", "input_data_format", "return_tensors",
          "size_divisor", "format", "device", "disable_grouping", "rescale_offset", "include_top",
          "do_flip_channel_order"}


@dataclass
class HFCheckpoint:
    path: Path
    source: str
    config: dict
    model_type: str
    task: str  # Optimum's task name
    supported: list[str]
    labels: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        from .transformer import CACHE_NOTE

        if self.source.endswith(CACHE_NOTE):
            return self.source[: -len(CACHE_NOTE)].rsplit("/", 1)[-1]
        return self.path.name

    @property
    def architecture(self) -> dict:
        c = self.config
        facts = {"model_type": self.model_type, "architectures": ",".join(c.get("architectures") or []) or None,
                 "num_layers": c.get("num_hidden_layers"), "hidden_size": c.get("hidden_size")}
        return {k: v for k, v in facts.items() if isinstance(v, (int, str))}


def _tasks_manager():
    try:
        import optimum.exporters.onnx.model_configs  # noqa: F401  (registers its export configs with the TasksManager)
        from optimum.exporters.tasks import TasksManager
    except ImportError as e:
        raise DependencyError(f"Exporting a Hugging Face checkpoint needs Optimum's exporter ({e.name} is missing): "
                              "pip install 'edgeai[export]'.") from None
    return TasksManager


def inspect(model: str | os.PathLike, task: str | None) -> HFCheckpoint:
    """The checkpoint, its Optimum task (given, or inferred from its architecture) and labels;
    one sentence when Optimum cannot export that model type or task."""
    path, source = resolve(model)
    config = _read_json(path / "config.json")
    model_type = str(config.get("model_type") or "")
    tm = _tasks_manager()
    try:
        supported = sorted(tm.get_supported_tasks_for_model_type(model_type.replace("_", "-"), "onnx", library_name="transformers"))
    except (KeyError, ValueError):
        raise InputError(f"Optimum's ONNX exporter does not support the model type {model_type!r} of {path} "
                         "(it lists the types it knows in optimum.exporters.tasks.TasksManager).") from None
    if task is None:
        task = _infer_task(tm, config)
    task = tm.map_from_synonym(task)
    # edgeai's tasks: Optimum's, less the "-with-past" variants of all but the generation tasks
    # (a KV cache serves only edgeai's generation loop, which the plain generation task names)
    gen_tasks = ("text-generation-with-past", "text2text-generation-with-past")
    offered = [t for t in supported if not t.endswith("-with-past") or t in gen_tasks]
    if task not in offered:
        why = (f"edgeai exports {task.removesuffix('-with-past')} without a KV cache"
               if task in supported else f"Optimum cannot export a {model_type} model for {task}")
        raise InputError(f"{why}; for {model_type} it can export: {', '.join(dict.fromkeys(t.removesuffix('-with-past') for t in offered))}.")
    for gen_task in ("text-generation", "text2text-generation"):
        if task.startswith(gen_task):  # always with the cache: edgeai's loop needs it
            if f"{gen_task}-with-past" not in supported:
                raise InputError(f"Optimum cannot export {model_type} with a KV cache, which edgeai's generation loop needs.")
            task = gen_task
    labels: list[str] = []
    if task in ("image-classification", "text-classification", "token-classification"):
        id2label = config.get("id2label") or {}
        labels = [str(id2label.get(str(i), id2label.get(i, f"LABEL_{i}"))) for i in range(len(id2label))]
    return HFCheckpoint(path, source, config, model_type, task, supported, labels)


def _infer_task(tm, config: dict) -> str:
    archs = config.get("architectures") or []
    try:
        import transformers

        return tm.infer_task_from_model(getattr(transformers, archs[0]))
    except (IndexError, AttributeError, KeyError, ValueError, RuntimeError):
        raise InputError(f"Cannot tell the task of this checkpoint (architectures: {archs or 'not given'}); "
                         "pass --task.") from None


def load(ck: HFCheckpoint):
    """The PyTorch model for the task, from the local files only.

    Optimum's ``get_model_from_task`` picks the class and loads it, but does not say which
    weights the checkpoint lacked; transformers then starts them at random with only a logged
    hint (a sentence-embedding checkpoint exported for text-classification got a random head
    and answered 0.505/0.495 for every text, validated 1.000 against the same random PyTorch
    model). So the class is taken from Optimum and loaded here with ``output_loading_info``,
    and a checkpoint that does not hold every weight of the task's model is refused."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the files are local; never reach for the hub
    tm = _tasks_manager()
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # its "newly initialized" hint becomes the error below
    try:
        cls = tm.get_model_class_for_task(ck.task, "pt", model_type=ck.model_type, library="transformers")
        model, info = cls.from_pretrained(str(ck.path), output_loading_info=True)
        tm.standardize_model_attributes(model, library_name="transformers")
    except Exception as e:  # transformers raises OSError/ValueError/KeyError for bad checkpoints
        raise ExportError(f"transformers could not load {ck.path} for {ck.task}: {_said(e, 300)}") from None
    finally:
        hf_logging.set_verbosity(verbosity)
    missing = list(info.get("missing_keys") or []) + [k[0] if isinstance(k, tuple) else k for k in info.get("mismatched_keys") or []]
    if ck.task == "feature-extraction":  # a head checkpoint's base model: its pooler is no part of the hidden states exported
        missing = [k for k in missing if not k.startswith("pooler.")]
    if missing:
        shown = ", ".join(missing[:4]) + (f" and {len(missing) - 4} more" if len(missing) > 4 else "")
        base = (" (--task feature-extraction exports the model without a head)"
                if "feature-extraction" in ck.supported and ck.task != "feature-extraction" else "")
        raise InputError(f"{ck.path} has no trained weights for {shown} of the {ck.task} model: transformers would "
                         f"start them at random and the package would answer noise. Export a checkpoint trained "
                         f"for {ck.task}, or pass the --task it was trained for{base}.")
    return model.eval()


def onnx_config(model, ck: HFCheckpoint):
    ctor = _tasks_manager().get_exporter_config_constructor(exporter="onnx", model=model, task=ck.task, library_name="transformers")
    return ctor(model.config, task=ck.task)


def write_onnx(model, config, path: Path) -> int:
    """Optimum's exporter, as it is; returns the opset it used."""
    from optimum.exporters.onnx.convert import export

    opset = int(config.DEFAULT_ONNX_OPSET)
    try:
        export(model, config, path, opset=opset)
    except Exception as e:
        if isinstance(e, OSError) and e.strerror:  # a full or read-only disk: as onnx_export.to_onnx says it
            raise ExportError(f"Optimum's ONNX exporter could not write the graph into {user_path(path.parent)}: {e.strerror}.") from None
        raise ExportError(f"Optimum's ONNX exporter failed: {str(e).strip().splitlines()[0][:300]}") from None
    return opset


def outputs_module(model, input_names: list[str], output_names: list[str]):
    """The model as the ONNX graph sees it: inputs by position, outputs a tuple in graph order."""
    import torch

    class Outputs(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, *args):
            out = self.model(**dict(zip(input_names, args)))
            return tuple(out[n] for n in output_names)

    return Outputs().eval()


def check_image_preprocess(path: Path, pre: dict, images: list) -> None:
    """Refuse, in one sentence, a checkpoint whose processor makes other pixels than the runtime's
    translation of it (``pre``) on ``images``: the export's validation feeds both graphs the same
    pixels, so it cannot see a difference here. LeViT's enlarged short side, PoolFormer's crop_pct
    above 384 and any processor logic not in the JSON settings are caught by this, not guessed."""
    import numpy as np

    from edgeai.preprocess import ImagePreprocessor, as_image, to_rgb

    processor, ours = _image_processor(path), ImagePreprocessor(pre)
    for im in images:
        theirs = np.asarray(processor(images=to_rgb(as_image(im)), return_tensors="np")["pixel_values"][0], np.float32)
        mine = ours(im)
        # resampling the same image twice differs by a grey level here and there (0.004 after
        # scaling to [0, 1]); a wrong size, crop or mean moves every pixel by a tenth or more
        spread = float(np.abs(theirs - theirs.mean()).mean()) or 1.0
        if mine.shape != theirs.shape or float(np.abs(mine - theirs).mean()) > 0.02 * spread:
            got = f"{tuple(theirs.shape)} vs edgeai's {tuple(mine.shape)}" if mine.shape != theirs.shape else \
                f"mean pixel difference {np.abs(mine - theirs).mean() / spread:.0%} of the pixels' spread"
            raise InputError(f"The image processor of {path} ({processor.__class__.__name__}) prepares pixels in a way "
                             f"edgeai's runtime does not reproduce ({got} on a photo); export it with a --task whose "
                             "inputs are tensors instead.")


def _image_processor(path: Path):
    """The checkpoint's image processor as transformers builds it (export time only)."""
    from transformers import AutoImageProcessor

    try:
        # trust_remote_code=False: a processor with auto_map is refused, not an interactive [y/N] prompt
        return AutoImageProcessor.from_pretrained(str(path), use_fast=False, local_files_only=True, trust_remote_code=False)
    except Exception as e:  # noqa: BLE001 -- transformers raises what the config file's contents make it raise
        raise InputError(f"transformers could not build the image processor of {path}: {_said(e, 200)}.") from None


def _said(e: Exception, limit: int) -> str:
    """transformers' message on one line, every line of it: a size mismatch's first line is only
    "Error(s) in loading state_dict for Linear:" (review)."""
    return " ".join(line.strip() for line in str(e).splitlines() if line.strip())[:limit] or type(e).__name__


def _three(value, name: str, path: Path) -> list[float]:
    """An image_mean/std as three floats: processors accept one number for every channel."""
    values = [value] * 3 if isinstance(value, (int, float)) else list(value)
    if len(values) != 3:
        raise InputError(f"The image processor of {path} gives {name} {values}; edgeai needs one value or three (RGB).")
    return [float(x) for x in values]


def image_preprocess(path: Path) -> dict:
    """The manifest's ``preprocess`` from the checkpoint's image processor (resize, crop, rescale,
    normalize, resampling), so the runtime prepares pixels as transformers would.

    The settings are read from the processor transformers builds, not the JSON file: an integer
    ``size`` means a square to ViT but the short side to ConvNeXt, and unset keys take the class's
    defaults (ConvNeXt's crop_pct 0.875); read from the file, both were wrong pixels (review).
    :func:`check_image_preprocess` then compares the result with the processor on photos."""
    if not (path / "preprocessor_config.json").is_file():
        raise InputError(f"{path} has no preprocessor_config.json: edgeai reads the image size, crop and "
                         "normalization from it (save the checkpoint's image processor beside the weights).")
    cfg = _image_processor(path).to_dict()
    flags = {k for k, v in cfg.items() if k not in _KNOWN and k.startswith("do_") and v}
    if flags:
        raise InputError(f"The image processor of {path} sets {', '.join(sorted(flags))}, which edgeai's runtime "
                         "does not reproduce; export it with a --task whose inputs are tensors instead.")
    if not cfg.get("do_resize", True):
        raise InputError(f"The image processor of {path} does not resize (do_resize false), so every image would "
                         "keep its own size; edgeai needs a fixed input size.")
    size, crop = cfg.get("size") or {}, cfg.get("crop_size") or {}
    if isinstance(size, int):  # an older processor class that keeps an integer: ViT's rule
        size = {"shortest_edge": size} if not cfg.get("default_to_square", True) else {"height": size, "width": size}
    if isinstance(crop, int):
        crop = {"height": crop, "width": crop}
    resample = 2 if cfg.get("resample") is None else int(cfg["resample"])
    if resample not in _RESAMPLE:
        raise InputError(f"The image processor of {path} resamples with PIL filter {resample}, which edgeai does not know.")
    pre: dict = {"type": "image", "source": "preprocessor_config.json", "layout": "NCHW",
                 "channel_order": "BGR" if cfg.get("do_flip_channel_order") else "RGB",  # MobileViT's
                 "interpolation": _RESAMPLE[resample],
                 "scale": float(cfg.get("rescale_factor", 1 / 255)) if cfg.get("do_rescale", True) else 1.0}
    # a processor class without do_normalize (MobileViT) does not normalize: the dict holds every attribute
    image_std = _three(cfg.get("image_std", 1.0), "image_std", path)
    mean, std = (_three(cfg.get("image_mean", 0.0), "image_mean", path), image_std) if cfg.get("do_normalize", False) \
        else ([0.0] * 3, [1.0] * 3)
    # EfficientNet's processor: rescale_offset maps pixels to [-1, 1] (x * scale - 1), and
    # include_top (its default) divides by image_std once more after normalizing; both fold into
    # the runtime's (x * scale - mean) / std. Left out, pixels were 2.1x off, and the export
    # check, fed the same wrong pixels, still passed (review).
    if cfg.get("rescale_offset") and cfg.get("do_rescale", True):
        mean = [m + 1.0 for m in mean]
    if cfg.get("include_top", str(cfg.get("image_processor_type", "")).startswith("EfficientNet")):
        std = [s * t for s, t in zip(std, image_std)]
    if (mean, std) != ([0.0] * 3, [1.0] * 3):
        pre["mean"], pre["std"] = mean, std
    if "height" in size:
        pre["resize"] = [int(size["height"]), int(size["width"])]
    elif "shortest_edge" in size:
        edge, kind = int(size["shortest_edge"]), str(cfg.get("image_processor_type", ""))
        # enlarge by 1/crop_pct, then crop: ConvNeXt below 384 only (it squashes to the size from
        # there), PoolFormer always, its crop_size; LeViT enlarges by 256/224
        if cfg.get("crop_pct") and (edge < 384 or not kind.startswith("ConvNext")):
            pre.update(resize_shorter=int(edge / float(cfg["crop_pct"])), crop=[edge, edge], rounding="floor")
        elif cfg.get("crop_pct"):
            pre["resize"] = [edge, edge]
        elif kind.startswith("Levit"):
            pre.update(resize_shorter=int(edge * 256 / 224), rounding="floor")
        else:
            pre.update(resize_shorter=edge, rounding="floor")
    else:
        raise InputError(f"The image processor of {path} gives no fixed size ({json.dumps(size)}); edgeai needs one.")
    if cfg.get("do_center_crop") and crop:
        pre["crop"] = [int(crop["height"]), int(crop["width"])]
    if "crop" not in pre and "resize" not in pre:
        raise InputError(f"The image processor of {path} keeps the aspect ratio without cropping, so sizes vary; "
                         "edgeai needs a fixed input size.")
    return pre
