"""``postprocess.type: token-classification``: named entities, grouped as transformers' token
classification pipeline does with ``aggregation_strategy="simple"``.

Each token (special tokens left out) takes its best label; neighbouring tokens of one entity
type are joined (a ``B-`` label starts a new one); each group is ``{"entity_group", "score" (the
mean of its tokens' scores), "word" (its tokens decoded), "start", "end"}`` with character
offsets into the input text, and groups labelled ``O`` are dropped. Written here because the
runtime does not import transformers; the tokenizer that travels in the package gives the
offsets and decodes the words, as the fast tokenizer does in transformers.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from edgeai.data.compare import bio_tag
from edgeai.postprocess import softmax
from edgeai.text import encode_batch


class TokenClassification:
    needs_inputs = True  # the pipeline passes the texts: offsets and words come from them

    def __init__(self, spec: dict, pkg):
        from tokenizers import Tokenizer

        self.output = spec.get("output") or pkg.manifest["outputs"][0]["name"]
        self.ignore = set(spec.get("ignore", ["O"]))
        self.labels = pkg.labels
        pre = pkg.manifest["preprocess"]
        self.tokenizer = Tokenizer.from_file(str(pkg.asset_path(pre["tokenizer"])))
        self.tokenizer.no_padding()
        self.max_length = int(pre["max_length"])
        self.tokenizer.enable_truncation(self.max_length)
        self.unk_id = self._unk_id()

    def _unk_id(self) -> int | None:
        token = getattr(self.tokenizer.model, "unk_token", None)
        return self.tokenizer.token_to_id(token) if token else None

    def __call__(self, outputs: dict[str, np.ndarray], k: int | None = None, items: list[Any] | None = None) -> list[dict]:
        if items is None:
            raise ValueError("token classification needs the input texts")
        # a sentence pair ({"text", "text_pair"} or check_text's tuple): the entities of its first text.
        # The pair is encoded as the model saw it, truncation included: encoded alone, a long first
        # text kept tokens the pair's truncation had cut, and read the second text's labels for them.
        pairs = [t if isinstance(t, str) else (t["text"], t["text_pair"]) if isinstance(t, dict) else tuple(t) for t in items]
        texts = [t if isinstance(t, str) else t[0] for t in pairs]
        encodings = encode_batch(self.tokenizer, pairs, self.max_length)  # a very long text: its head
        logits = outputs[self.output]
        return [{"entities": self._entities(row, text, enc)} for row, text, enc in zip(logits, texts, encodings)]

    def _entities(self, logits: np.ndarray, text: str, enc) -> list[dict]:
        tokens = []
        for i, (tid, token, (start, end), special, seq) in enumerate(zip(enc.ids, enc.tokens, enc.offsets,
                                                                         enc.special_tokens_mask, enc.sequence_ids)):
            if special or seq != 0:  # the second text of a pair: its offsets are into that text
                continue
            scores = softmax(logits[i].astype(np.float64))
            best = int(scores.argmax())
            word = text[start:end] if tid == self.unk_id else token  # transformers shows an unknown token's text
            label = self.labels[best] if best < len(self.labels) else f"LABEL_{best}"
            tokens.append({"entity": label, "score": float(scores[best]), "word": word, "start": int(start), "end": int(end)})
        groups = [self._group(g) for g in _runs(tokens)]
        return [g for g in groups if g["entity_group"] not in self.ignore]

    def _group(self, tokens: list[dict]) -> dict:
        words = [t["word"] for t in tokens]
        decoder = self.tokenizer.decoder
        word = decoder.decode(words) if decoder is not None else " ".join(words)
        return {"entity_group": tokens[0]["entity"].split("-", 1)[-1], "score": float(np.mean([t["score"] for t in tokens])),
                "word": word, "start": tokens[0]["start"], "end": tokens[-1]["end"]}


def _runs(tokens: list[dict]) -> list[list[dict]]:
    runs: list[list[dict]] = []
    for t in tokens:
        bi, tag = bio_tag(t["entity"])
        if runs and bi != "B" and bio_tag(runs[-1][-1]["entity"])[1] == tag:
            runs[-1].append(t)
        else:
            runs.append([t])
    return runs
