"""``preprocess.type: text``: the package's own tokenizer (HF ``tokenizers``), padded per batch."""

from __future__ import annotations

from typing import Any

import numpy as np

from edgeai.text import TextPreprocessor


class TextInput:
    kind = "text"

    def __init__(self, pkg, input_names: list[str]):
        spec = pkg.manifest["preprocess"]
        # a classifier's answer to a text of unknown tokens only is a confident guess, the same
        # for any such text: refused. An embedding of one is still a vector a search can hold.
        guesses = (pkg.manifest.get("postprocess") or {}).get("type") == "classification"
        self.tokenizer = TextPreprocessor(pkg.asset_path(spec["tokenizer"]), spec, input_names, refuse_unknown=guesses)

    def batch(self, items: list[Any]) -> dict[str, np.ndarray]:
        return self.tokenizer.batch(items)
