"""A small CNN for `edgeai export samples/net.py:make_model` (the README's bring-your-own-model example).

Any function that returns a ``torch.nn.Module`` works the same way; a real factory would load
its trained weights with ``edgeai.export.load_weights(module, path)``.
"""

from __future__ import annotations

import torch
from torch import nn


def make_model() -> nn.Module:
    """3x32x32 images -> 10 scores; seeded, so every export of it is the same network."""
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
        nn.Flatten(), nn.Linear(32, 10),
    ).eval()
