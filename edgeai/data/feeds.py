"""Model inputs ("feeds": ``{input name: array}``), made one way for every stage.

- :func:`random_feed`: seeded values of the model's input shapes (tensor models, benchmarks);
- :func:`load_arrays`: ``.npy`` (single-input models) or ``.npz`` (arrays by input name), never pickles;
- :func:`image_feeds` / :func:`text_feeds`: photos or texts through the package's own preprocessing;
- :func:`held_out_feeds` / :func:`calibration_feeds`: the inputs accuracy is measured on, and the
  disjoint ones quantization may look at (DESIGN.md, accuracy claims).
"""

from __future__ import annotations

import os
import warnings
import zipfile
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from edgeai.errors import InputError, unreadable

from .dtypes import numpy_dtype

Feed = dict[str, np.ndarray]
# A symbolic axis other than the batch axis gets this size in random feeds.
OTHER_AXIS = 16
BATCH_NAMES = ("batch", "batch_size")  # --dynamic x:1:batch, Optimum's batch_size


def check_room(one: Mapping[str, np.ndarray], batch: int, option: str = "--batch") -> None:
    """Refuse a batch whose inputs alone (``batch`` times the item ``one``) take over a quarter
    of the memory left: running it needs several times that, and numpy's MemoryError traceback,
    or the kernel's silent kill, was what the user got (review)."""
    from edgeai.machine import available_bytes

    need, room = batch * sum(int(v.nbytes) for v in one.values()), available_bytes()
    if room is not None and need > room / 4:
        raise InputError(f"{option} {batch} needs {need / 2**30:.1f} GiB for its inputs alone, and several times that to run; "
                         f"this machine has {room / 2**30:.1f} GiB available: give a smaller batch.")


def batch_axis(shape) -> int:
    """The axis named ``batch`` (or ``batch_size``) of a manifest shape, else 0."""
    return next((a for a, d in enumerate(shape or []) if str(d).lower() in BATCH_NAMES), 0)


def random_feed(inputs: Sequence[Mapping[str, Any]], batch: int = 2, seed: int = 0, other_axis: int = OTHER_AXIS,
                high: int = 10) -> Feed:
    """Seeded values for tensor specs: normal floats, random booleans, integers below ``high``
    (valid indices for any table), or over the rows of the table the input indexes
    (``index_rows``), and bytes over 0..255. Axes with the same name get the same size.
    Where a spec records its export example (``example_shape``, ``example_range``), named axes
    other than the batch take the example's size and values are drawn within its range. The
    batch is the axis named ``batch`` (or ``batch_size``) where one is (a sequence-first LSTM's
    ``[seq, batch, features]``), else the first."""
    rng = np.random.default_rng(seed)
    sizes: dict[str, int] = {}
    feed = {}
    for spec in inputs:
        example = spec.get("example_shape")  # a user model's own example (export/families/custom.py)
        first = batch_axis(spec["shape"])
        shape = [d if isinstance(d, int) else sizes.setdefault(d, batch if axis == first else (example[axis] if example else other_axis))
                 for axis, d in enumerate(spec["shape"])]
        dtype = numpy_dtype(spec["dtype"])
        lo, hi = spec.get("example_range") or (None, None)
        if dtype.kind == "f":
            feed[spec["name"]] = (rng.standard_normal(shape) if lo is None or hi <= lo else rng.uniform(lo, hi, shape)).astype(dtype)
        elif dtype.kind == "b":
            feed[spec["name"]] = rng.random(shape) > 0.5
        else:
            # ids into a table span its rows, and bytes all 256 values (review: held-out ids and
            # uint8 pixels were only 0 and 1, so an int8 was measured on two rows of its table)
            top = spec.get("index_rows") or (256 if dtype == np.uint8 else high)
            low, top = (0, top) if lo is None else (int(lo), int(hi) + 1)
            feed[spec["name"]] = rng.integers(low, top, size=shape).astype(dtype)
    return feed


def load_arrays(path: str | os.PathLike, names: Sequence[str]) -> Feed:
    """A ``.npz`` of arrays named after the inputs, or a ``.npy`` for a single-input model."""
    p = Path(path)
    names = list(names)
    suffix = p.suffix.lower()  # BATCH.NPY, as a camera or Windows names files
    if suffix not in (".npy", ".npz") or (suffix == ".npy" and len(names) != 1):
        raise InputError(f"{p}: this model takes .npz files of arrays named {', '.join(names)}"
                         f"{' or .npy arrays' if len(names) == 1 else ''}.")
    if why := unreadable(p):  # is_file() raises in a folder this user may not enter
        raise InputError(why)
    if not p.is_file():
        raise InputError(f"The array file {p} does not exist.")
    try:
        # opened here, not by np.load: numpy leaves its own handle open when a .npz is damaged
        with open(p, "rb") as f:
            _header_fits(f, p)  # a damaged header's shape: numpy would allocate it first (MemoryError)
            loaded = np.load(f, allow_pickle=False)  # read by what the file holds, whatever its suffix says (review)
            if isinstance(loaded, np.ndarray):
                if len(names) != 1:
                    raise InputError(f"{p} holds one array (a .npy file), and the model takes {len(names)} inputs: give a .npz "
                                     "with an array for each, e.g. np.savez(..., " + ", ".join(f"{n}=..." for n in names) + ").")
                arrays = {names[0]: loaded}
            else:
                with loaded as z:
                    arrays = {k: z[k] for k in z.files}
    except InputError:
        raise
    except MemoryError:  # a .npz member that inflates past the memory left
        raise InputError(f"{p} holds arrays larger than the memory this machine has free.") from None
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
        why = str(e).splitlines()[0][:200] if str(e) else type(e).__name__
        if "pickled" in why:  # numpy's words for "no .npy header", which suggest unpickling an unknown file
            why = "no numpy header: not a .npy file, or pickled Python objects, which edgeai never loads"
        raise InputError(f"{p} is not a readable numpy file ({why}).") from None
    if set(arrays) != set(names):
        raise InputError(f"{p} holds arrays {sorted(arrays)}; the model takes {names}.")
    return arrays


def _header_fits(f, p: Path) -> None:
    """A ``.npy`` whose header declares more bytes than the file holds (a cut or damaged file) is
    refused before numpy allocates the declared array. Other files are left to np.load."""
    start = f.tell()
    try:
        if f.read(6) != b"\x93NUMPY":
            return
        f.seek(start)
        version = np.lib.format.read_magic(f)
        read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, _, dtype = read(f)
        if dtype.hasobject:
            return  # refused by allow_pickle=False
        need = int(np.prod(shape, dtype=object)) * dtype.itemsize
        have = os.fstat(f.fileno()).st_size - f.tell()
    except (ValueError, OSError, EOFError):
        return  # np.load says what is wrong with it
    finally:
        f.seek(start)
    if need > have:
        raise InputError(f"{p} is not a readable numpy file (its header declares an array of shape {tuple(shape)}, "
                         f"{need:,} bytes, and the file holds {max(have, 0):,}: cut short or damaged).")


def feed_files(folder: str | os.PathLike, names: Sequence[str]) -> list[Path]:
    """The ``.npz`` (and, for single-input models, ``.npy``) files of a folder, in name order, or
    one sentence on why there are none. Cheap: an export checks its ``--calibration`` with it
    before the minutes of tracing (review: a missing folder was said only after them)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"{folder} is a file; this takes a directory of .npy/.npz files (put {folder.name} in one)." if folder.is_file()
                         else f"Directory {folder} does not exist.")
    files = [p for p in sorted(folder.iterdir()) if not p.name.startswith(".")  # hidden: a macOS ._x.npy copy
             and (p.suffix.lower() == ".npz" or (p.suffix.lower() == ".npy" and len(names) == 1))]
    if not files:
        if len(names) > 1 and any(p.suffix.lower() == ".npy" for p in folder.iterdir()):  # a .npy holds one array: one input's
            raise InputError(f"{folder} holds .npy files, but the model takes {len(names)} inputs ({', '.join(names)}): give "
                             "one .npz per example with an array for each, e.g. np.savez('0.npz', " +
                             ", ".join(f"{n}=..." for n in names) + ").")
        raise InputError(f"{folder} holds no .npy (single-input models) or .npz files.")
    return files


def feeds_from_dir(folder: str | os.PathLike, names: Sequence[str], inputs: list[dict] | None = None) -> list[Feed]:
    """Every ``.npz`` (and, for single-input models, ``.npy``) file of a folder, in name order;
    with ``inputs`` (the manifest's), each checked against them and cast where that is safe."""
    files = feed_files(folder, names)
    if inputs is None:
        return [load_arrays(p, names) for p in files]
    from edgeai.session import check_feed

    feeds = []
    for p in files:  # checked as `edgeai run` checks them: a quantizer fed a bad array fails deep in ONNX Runtime
        try:
            feeds.append(check_feed(inputs, load_arrays(p, names)))
        except InputError as e:
            raise InputError(f"{p}: {e}" if str(p) not in str(e) else str(e)) from None
    return feeds


# A tensor model's --calibration files: every 4th measures the variant and is not calibrated on
# (DESIGN.md: accuracy is measured on inputs held out from calibration; they were both, review)
HOLD_OUT_EVERY = 4


def split_arrays(feeds: list[Feed]) -> tuple[list[Feed], list[Feed]]:
    """(to calibrate on, to measure on): every HOLD_OUT_EVERY-th file held out where there are
    that many; fewer, the same list twice (the figures then say "calibration-arrays")."""
    if len(feeds) < HOLD_OUT_EVERY:
        return feeds, feeds
    return [f for i, f in enumerate(feeds) if i % HOLD_OUT_EVERY != HOLD_OUT_EVERY - 1], feeds[HOLD_OUT_EVERY - 1 :: HOLD_OUT_EVERY]


def load_inputs(path: str | os.PathLike, pkg) -> dict[str, np.ndarray]:
    """``--input``: a .npz of named arrays, or a .npy for a single-input model (no pickles)."""
    arrays = load_arrays(path, [i["name"] for i in pkg.manifest["inputs"]])
    for i in pkg.manifest["inputs"]:  # a missing axis was an IndexError (review); size: empty along any batch axis
        if (a := arrays[i["name"]]).ndim != len(i["shape"] or []) or a.ndim == 0 or a.size == 0:
            raise InputError(f"{path}: {i['name']} has shape {list(a.shape)}; the model takes {i['shape']}, with at least one item.")
    return arrays


def batched(arrays: Sequence[np.ndarray], name: str, batch: int) -> list[Feed]:
    return [{name: np.stack(arrays[i : i + batch])} for i in range(0, len(arrays), batch)]


def image_feeds(pkg, images: Sequence[Any], batch: int = 16) -> list[Feed]:
    """Images (paths, PIL images, frames) through the package's preprocessing, in batches."""
    from edgeai.preprocess import ImagePreprocessor

    pre = ImagePreprocessor(pkg.manifest["preprocess"])
    return batched(pre.each(images), pkg.manifest["inputs"][0]["name"], batch)


def text_feeds(pkg, texts: Sequence[str], batch: int = 1, max_length: int | None = None) -> list[Feed]:
    """Tokenized batches (each padded to its longest text), with the package's own tokenizer.

    One text per feed by default: that is how the runtime runs a dynamic INT8 variant (its
    activation scales are per call), so the figures tuned and recorded are the ones users get."""
    from edgeai.text import TextPreprocessor

    pre = dict(pkg.manifest["preprocess"])
    if max_length:
        pre["max_length"] = max_length
    tok = TextPreprocessor(pkg.asset_path(pre["tokenizer"]), pre, [i["name"] for i in pkg.manifest["inputs"]])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # truncating the long test sentences is intended
        return [tok.batch(texts[i : i + batch]) for i in range(0, len(texts), batch)]


def generation_feeds(pkg, texts: Sequence[str], limit: int = 64) -> list[Feed]:
    """One prompt feed per text (an empty cache), cut to ``limit`` tokens: what the next-token
    agreement of a generation package's variants is measured on. An encoder-decoder reads each
    text through its encoder (fp32) and is fed the same text after its start token."""
    from tokenizers import Tokenizer

    spec = pkg.manifest["generation"]
    tok = Tokenizer.from_file(str(pkg.asset_path(spec["tokenizer"])))
    tok.no_padding()
    encoder = _encoder(pkg)
    feeds = []
    for text in texts:
        ids = tok.encode(text).ids[:limit]
        if not ids:
            continue
        if encoder is None:
            feeds.append(decoder_feed(pkg, np.asarray([ids], dtype=np.int64), past=0))
            continue
        source = np.asarray([ids], dtype=np.int64)
        cross = encoder.run([c["output"] for c in spec["cross"]], {
            "input_ids": source, "attention_mask": np.ones_like(source),
            "decoder_input_ids": np.asarray([[spec["decoder_start_token_id"]]], dtype=np.int64)})
        target = np.asarray([[spec["decoder_start_token_id"], *ids[: limit - 1]]], dtype=np.int64)
        feed = decoder_feed(pkg, target, past=0, encoded=len(ids))
        feed.update({c["input"]: value for c, value in zip(spec["cross"], cross)})
        feeds.append(feed)
    return feeds


def next_tokens(feeds: list[Feed]) -> list[np.ndarray]:
    """Each generation feed's real next token after every position but the last (perplexity)."""
    return [f["input_ids"][0, 1:] for f in feeds]


def _encoder(pkg):
    """An encoder-decoder's encoder graph on the CPU (None for a decoder-only package)."""
    spec = pkg.manifest["generation"]
    if "encoder" not in spec:
        return None
    import onnxruntime as ort

    return ort.InferenceSession(str(pkg.asset_path(spec["encoder"])), providers=["CPUExecutionProvider"])


def decoder_feed(pkg, ids: np.ndarray, past: int, seed: int = 0, encoded: int | None = None) -> Feed:
    """A decoder step: ``ids`` (batch x new tokens) after ``past`` cached positions (seeded noise;
    none on a prompt's first step), with its attention mask and position ids; an encoder-decoder's
    cross-attention cache is noise for ``encoded`` prompt tokens (default: as many as ``past``)."""
    spec = pkg.manifest["generation"]
    batch, n = ids.shape
    heads, size = spec["kv_shape"]
    encoded = encoded if encoded is not None else max(past, 1)
    rng = np.random.default_rng(seed)
    feed: Feed = {"input_ids": ids, "attention_mask": np.ones((batch, past + n), dtype=np.int64),
                  "position_ids": np.tile(np.arange(past, past + n, dtype=np.int64), (batch, 1)),
                  "encoder_attention_mask": np.ones((batch, encoded), dtype=np.int64),
                  "logits_to_keep": np.asarray([n], dtype=np.int64)}  # every new position's logits
    for p in spec["past"]:
        feed[p["input"]] = rng.standard_normal((batch, heads, past, size)).astype(np.float32)
    for p in spec.get("cross", []):
        feed[p["input"]] = rng.standard_normal((batch, heads, encoded, size)).astype(np.float32)
    names = {i["name"] for i in pkg.manifest["inputs"]}
    return {k: v for k, v in feed.items() if k in names}


def input_kind(pkg) -> str:
    """``image``, ``text``, ``generation`` (a decoder with its KV cache) or ``tensor``: what the
    package's preprocessing takes."""
    if "generation" in pkg.manifest:
        return "generation"
    kind = pkg.manifest.get("preprocess", {}).get("type", "none")
    return kind if kind in ("image", "text") else "tensor"


def held_out_feeds(pkg, texts: Sequence[str] | None = None, per_photo: int = 30) -> list[Feed]:
    """Inputs never used for calibration or tuning: held-out photos or sentences (``texts``: an
    exporter's own test split), seeded noise of the input shapes for tensor models."""
    return held_out_inputs(pkg, texts, per_photo)[1]


def held_out_inputs(pkg, texts: Sequence[str] | None = None, per_photo: int = 30,
                    arrays: str | os.PathLike | None = None, calibrated: bool = True) -> tuple[str, list[Feed]]:
    """``(set name, feeds)`` of :func:`held_out_feeds`; the name goes into a variant's
    ``accuracy.held_out`` (for photos: edgeai.data.photos.held_out_images). ``arrays``: a folder
    of .npy/.npz feeds, used for a tensor model instead of seeded noise; all of them where the
    variant was not ``calibrated`` on them (dynamic INT8), else those split_arrays holds out."""
    kind = input_kind(pkg)
    if kind == "generation":  # next-token logits at every position of each held-out text
        from .texts import NamedTexts, held_out_texts

        name, texts = (texts.name if isinstance(texts, NamedTexts) else "given-texts", list(texts)) if texts else held_out_texts()
        # every third text, 24 tokens each: the logits of all positions are compared at once
        # (vocabulary-sized rows), so the set is thinned to keep that in memory
        return name, generation_feeds(pkg, list(texts)[::3], limit=24)
    if kind == "text":
        from .texts import NamedTexts, held_out_texts

        name, texts = (texts.name if isinstance(texts, NamedTexts) else "given-texts", list(texts)) if texts else held_out_texts()
        return name, text_feeds(pkg, texts)
    if kind == "image":
        from .photos import held_out_images

        name, images = held_out_images(per_photo)
        if images:
            return name, image_feeds(pkg, images)
    if arrays is not None and kind == "tensor":
        # The user's own arrays (--calibration DIR) say what the model is fed; seeded noise can be
        # far from it (a model fed pixels in [0, 1] measured 0.97 on normal noise, 1.000 on its
        # own kind of input). Every HOLD_OUT_EVERY-th file is kept from a static calibration
        # (split_arrays); with fewer files than that the set's name says they were not.
        feeds = feeds_from_dir(arrays, [s["name"] for s in pkg.manifest["inputs"]], pkg.manifest["inputs"])
        calibrate, held = split_arrays(feeds)
        return ("held-out-arrays", held) if calibrated and held is not calibrate else ("calibration-arrays", feeds)
    return "seeded-noise", [random_feed(pkg.manifest["inputs"], batch=2, seed=1000 + i, high=2) for i in range(8)]


def calibration_image_paths(folder: str | os.PathLike) -> list[Path]:
    """The image files under a ``--calibration`` directory (sorted, subfolders included, as a
    bulk run reads a folder), or one sentence. Other files (a .DS_Store, notes, AppleDouble
    ``._*`` copies) are not images and are passed over."""
    from edgeai.preprocess import IMAGE_SUFFIXES, image_files

    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"{folder} is a file; --calibration takes a directory of images (put {folder.name} in one)."
                         if folder.is_file() else f"Calibration directory {folder} does not exist.")
    paths = image_files(folder)
    if not paths:
        raise InputError(f"Calibration directory {folder} holds no image files ({', '.join(sorted(IMAGE_SUFFIXES))}).")
    return paths


def calibration_feeds(pkg, folder: str | os.PathLike | None = None, per_photo: int = 7, dynamic_ok: bool = True) -> list[Feed]:
    """What static quantization calibrates on: ``folder`` (images for image models, .npy/.npz
    otherwise), else the calibration photos or the tuning sentences, never the held-out ones.
    ``dynamic_ok``: whether the error for a model with none may suggest dynamic INT8 instead
    (not for TensorRT, which runs only calibrated INT8)."""
    kind = input_kind(pkg)
    if folder is not None:
        if kind != "image":  # a tensor model's arrays held out to measure the variant are not calibrated on (split_arrays)
            feeds = feeds_from_dir(folder, [s["name"] for s in pkg.manifest["inputs"]], pkg.manifest["inputs"])
            return split_arrays(feeds)[0] if kind == "tensor" else feeds  # a text model measures on its sentences
        # paths, not opened images: each is decoded, cut to the model's size and let go (60
        # twelve-megapixel photos held whole would take 3 GB)
        return image_feeds(pkg, calibration_image_paths(folder), batch=1)
    if kind == "image":
        from .photos import CALIBRATION, image_set

        images = [im for _, im in image_set(CALIBRATION, per_photo, seed=0)]
        if images:
            return image_feeds(pkg, images, batch=1)
    if kind == "text":
        from .texts import TUNING

        return text_feeds(pkg, TUNING, batch=1)
    raise InputError(
        f"Static quantization of {pkg.path} needs calibration inputs: pass --calibration DIR "
        "(images for image models, .npy arrays or .npz feeds otherwise)"
        + (", or use --method dynamic." if dynamic_ok else "; TensorRT runs only calibrated INT8.")
    )
