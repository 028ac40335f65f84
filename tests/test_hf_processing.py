"""A Hugging Face checkpoint's image processor and tokenizer, as the runtime reproduces them.

The export's own validation feeds PyTorch and ONNX Runtime the same pixels and tokens, so it
cannot see a processing mistake: a review found checkpoints answered wrongly with "top-1
agreement 1.000" (an integer ``size`` read as a square where ConvNeXt reads a short side, class
defaults left out, a cased tokenizer lowercased, a GPT-2 classifier padded with a token it never
sees). Here each translation is compared with transformers' own processor on real photos and
texts: processors of the classes edgeai reads equal theirs, and the ones it cannot reproduce are
refused in one sentence.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

transformers = pytest.importorskip("transformers")
pytest.importorskip("torch")

from conftest import CAT, COFFEE  # noqa: E402
from PIL import Image  # noqa: E402
from test_hf import TEXTS, _bpe_tokenizer, _minilm  # noqa: E402

from edgeai.errors import InputError  # noqa: E402
from edgeai.export.hf import check_image_preprocess, image_preprocess  # noqa: E402
from edgeai.preprocess import ImagePreprocessor  # noqa: E402

PHOTOS = [CAT, COFFEE]
MEAN, STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]


def _processor(name: str):
    """A processor object, or a preprocessor_config.json as older checkpoints on the Hub have it."""
    t = transformers
    sq = {"height": 64, "width": 64}
    return {
        "vit": lambda: t.ViTImageProcessor(size={"height": 48, "width": 48}),
        "vit, not normalized, box filter": lambda: t.ViTImageProcessor(size=sq, do_normalize=False, resample=4),
        "vit, hamming filter, one mean for all channels": lambda: {
            "image_processor_type": "ViTImageProcessor", "size": sq, "resample": 5, "image_mean": 0.5, "image_std": 0.5},
        "convnext": lambda: t.ConvNextImageProcessor(size={"shortest_edge": 64}),
        "convnext, crop_pct null": lambda: t.ConvNextImageProcessor(size={"shortest_edge": 64}, crop_pct=None),
        "convnext at 384": lambda: t.ConvNextImageProcessor(size={"shortest_edge": 384}),
        # microsoft/resnet-50's file: an integer size that ConvNeXt reads as the short side
        "resnet-50 feature extractor": lambda: {"feature_extractor_type": "ConvNextFeatureExtractor", "size": 64,
                                                "crop_pct": 0.875, "resample": 3, "image_mean": MEAN, "image_std": STD},
        # facebook/deit's: integer size and crop_size (a traceback before)
        "deit feature extractor": lambda: {"feature_extractor_type": "DeiTFeatureExtractor", "size": 72, "crop_size": 64,
                                           "do_center_crop": True, "resample": 3, "image_mean": MEAN, "image_std": STD},
        "bit": lambda: t.BitImageProcessor(size={"shortest_edge": 64}, crop_size={"height": 56, "width": 56}),
        "clip": lambda: t.CLIPImageProcessor(size={"shortest_edge": 64}, crop_size=sq),
        "levit": lambda: t.LevitImageProcessor(size={"shortest_edge": 64}, crop_size={"height": 56, "width": 56}),
        "poolformer": lambda: t.PoolFormerImageProcessor(size={"shortest_edge": 64}, crop_pct=0.9, crop_size=sq),
        "poolformer at 384": lambda: t.PoolFormerImageProcessor(size={"shortest_edge": 384}, crop_pct=0.9,
                                                                crop_size={"height": 384, "width": 384}),
        "mobilevit (BGR, not normalized)": lambda: t.MobileViTImageProcessor(size={"shortest_edge": 64},
                                                                             crop_size={"height": 56, "width": 56}),
        "efficientnet": lambda: t.EfficientNetImageProcessor(size=sq, image_mean=MEAN, image_std=STD),
        "efficientnet, offset": lambda: t.EfficientNetImageProcessor(size=sq, rescale_offset=True, rescale_factor=1 / 127.5),
        "efficientnet, no second division": lambda: t.EfficientNetImageProcessor(size=sq, include_top=False),
        "efficientnet, offset only": lambda: t.EfficientNetImageProcessor(size=sq, do_normalize=False, rescale_offset=True,
                                                                          rescale_factor=1 / 127.5),
    }[name]()


def _save(name: str, where: Path) -> None:
    made = _processor(name)
    if isinstance(made, dict):
        (where / "preprocessor_config.json").write_text(json.dumps(made))
    else:
        made.save_pretrained(where)


@pytest.mark.parametrize("name", ["vit", "vit, not normalized, box filter", "vit, hamming filter, one mean for all channels",
                                  "convnext", "convnext, crop_pct null", "convnext at 384", "resnet-50 feature extractor",
                                  "deit feature extractor", "bit", "clip", "levit", "poolformer", "poolformer at 384",
                                  "mobilevit (BGR, not normalized)", "efficientnet", "efficientnet, offset",
                                  "efficientnet, no second division", "efficientnet, offset only"])
def test_the_runtime_prepares_the_pixels_the_checkpoints_processor_does(name, tmp_path):
    _save(name, tmp_path)
    theirs = transformers.AutoImageProcessor.from_pretrained(str(tmp_path), use_fast=False)
    pre = image_preprocess(tmp_path)
    ours = ImagePreprocessor(pre)
    for photo in PHOTOS:
        want = theirs(images=Image.open(photo).convert("RGB"), return_tensors="np")["pixel_values"][0]
        got = ours(photo)
        assert got.shape == want.shape, (name, photo)
        np.testing.assert_allclose(got, want, atol=0.05, err_msg=f"{name} {photo}")  # a grey level, not a tenth
    check_image_preprocess(tmp_path, pre, PHOTOS)  # the export's own check passes them


def test_pixels_the_runtime_would_not_reproduce_are_refused(tmp_path):
    # the check the export runs: a squash where the processor crops (as an integer size was read)
    _save("convnext", tmp_path)
    wrong = {**image_preprocess(tmp_path), "resize": [64, 64]}
    wrong.pop("crop"), wrong.pop("resize_shorter")
    with pytest.raises(InputError, match=r"ConvNextImageProcessor\) prepares pixels in a way edgeai's runtime does not "
                                         r"reproduce \(mean pixel difference \d+% of the pixels' spread on a photo\)"):
        check_image_preprocess(tmp_path, wrong, PHOTOS)
    transformers.ViTImageProcessor(do_resize=False).save_pretrained(tmp_path / "keeps")
    with pytest.raises(InputError, match="does not resize .do_resize false., so every image would keep its own size"):
        image_preprocess(tmp_path / "keeps")
    (tmp_path / "odd").mkdir()
    (tmp_path / "odd" / "preprocessor_config.json").write_text(json.dumps({"image_processor_type": "ViTImageProcessor",
                                                                           "image_mean": [0.5, 0.5]}))
    with pytest.raises(InputError, match=r"gives image_mean \[0.5, 0.5\]; edgeai needs one value or three"):
        image_preprocess(tmp_path / "odd")


def _checkpoint(path: Path, config: dict):
    from edgeai.export.transformer import Checkpoint

    return Checkpoint(path, str(path), None, config, "text-classification", 64)


def test_the_tokenizer_keeps_its_configs_settings(tmp_path):
    """tokenizer.json lowercases; tokenizer_config.json says do_lower_case false, and transformers
    builds the tokenizer by the config: the package tokenizes as transformers does."""
    from transformers import AutoTokenizer, BertTokenizerFast

    from edgeai.export.transformer import load_tokenizer

    BertTokenizerFast.from_pretrained(_minilm()).save_pretrained(tmp_path)
    cfg = json.loads((tmp_path / "tokenizer_config.json").read_text())
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({**cfg, "do_lower_case": False}))
    tok, _, _ = load_tokenizer(_checkpoint(tmp_path, {"model_type": "bert"}))
    ref = AutoTokenizer.from_pretrained(str(tmp_path))
    for text in [*TEXTS, "THE CAT SAT"]:
        assert tok.encode(text).ids == ref(text)["input_ids"], text
    assert tok.encode("THE CAT").ids != tok.encode("the cat").ids


def test_a_tokenizer_config_naming_no_class_keeps_the_saved_vocabulary(tmp_path):
    """Without tokenizer_class, transformers takes the model's class (RoBERTa's here, for MiniLM's
    WordPiece file) and adds its <s>/</s>/<pad>: the pad became id 30525, outside the model's
    table, and the export failed. The saved tokenizer.json is taken as it is then."""
    import shutil

    from edgeai.export.transformer import load_tokenizer

    shutil.copy(Path(_minilm()) / "tokenizer.json", tmp_path / "tokenizer.json")
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"do_lower_case": True, "model_max_length": 512}))
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "roberta", "vocab_size": 30522, "pad_token_id": 0}))
    tok, pad_id, pad = load_tokenizer(_checkpoint(tmp_path, {"model_type": "roberta", "pad_token_id": 0}))
    assert (pad_id, pad, tok.get_vocab_size(with_added_tokens=True)) == (0, "[PAD]", 30522)


def test_the_pad_is_the_one_transformers_pads_with(tmp_path):
    """The BPE vocabulary holds <pad> (id 1), but this GPT-2 classifier pads with </s> and reads its
    logits at the last token that is not </s>: padded with <pad>, a short text batched with a long
    one was read at a padding position."""
    from transformers import GPT2TokenizerFast

    from edgeai.export.transformer import load_tokenizer

    bpe = _bpe_tokenizer()
    tok = GPT2TokenizerFast(tokenizer_object=bpe._tokenizer, bos_token="<s>", eos_token="</s>", unk_token="<unk>", pad_token="</s>")
    tok.save_pretrained(tmp_path)
    assert bpe.convert_tokens_to_ids("<pad>") == 1
    _, pad_id, pad = load_tokenizer(_checkpoint(tmp_path, {"model_type": "gpt2", "pad_token_id": tok.pad_token_id}))
    assert (pad_id, pad) == (tok.pad_token_id, "</s>") and pad_id != 1


@pytest.mark.parametrize("kind", ["Data2VecText", "MPNet", "IBert", "Roberta"])
def test_positions_of_encoders_that_count_from_the_padding_index(kind):
    """The most tokens these encoders take is their table less padding_idx + 1: the package's
    limit must be the longest input the model itself runs."""
    import torch

    from edgeai.export.transformer import positions

    config = getattr(transformers, f"{kind}Config")(vocab_size=40, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                                   intermediate_size=32, max_position_embeddings=40, pad_token_id=1)
    model = getattr(transformers, f"{kind}Model")(config).eval()
    limit = positions(config.to_dict())
    with torch.no_grad():
        model(input_ids=torch.full((1, limit), 5))
        with pytest.raises(IndexError):
            model(input_ids=torch.full((1, limit + 1), 5))
