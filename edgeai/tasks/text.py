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
        # an embedding is of one text: a pair's would be an embedding of neither
        no_pairs = ("an embedding model embeds one text at a time (to compare two texts, embed both and take the cosine "
                    "of their embeddings)") if (pkg.manifest.get("postprocess") or {}).get("type") == "embedding" else None
        self.tokenizer = TextPreprocessor(pkg.asset_path(spec["tokenizer"]), spec, input_names, refuse_unknown=guesses,
                                          no_pairs=no_pairs)

    def batch(self, items: list[Any]) -> dict[str, np.ndarray]:
        return self.tokenizer.batch(items)
