"""BLIP-BLEU pipeline end to end with a tiny random BLIP-2 (OPT) built from configs, no downloads."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from transformers import (
    Blip2Config,
    Blip2ForConditionalGeneration,
    Blip2Processor,
    BlipImageProcessor,
    GPT2Tokenizer,
)

from eval_crafter import scoring
from eval_crafter.errors import IncompatibleModelError
from eval_crafter.metrics import METRICS, ModelNotFoundError, VideoInput
from eval_crafter.metrics.blip_bleu import (
    BLIP2_DIR,
    CAPTION_FRAME_SIZE,
    BlipBleu,
    caption_frames,
    caption_images,
    caption_indices,
)
from eval_crafter.prompts import load_metadata
from tsm_video.data.video_io import read_frames, write_mp4

IMAGE_SIZE = 32  # the tiny processor's (and vision tower's) input size
WORDS = ["a", "dog", "cat", "red", "car", "on", "the", "beach", "is", "running"]


def _write_opt_tokenizer(folder: Path) -> GPT2Tokenizer:
    """A byte-level BPE tokenizer (OPT's class) over a tiny vocab: specials, words, letters."""
    vocab = {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3}
    for word in WORDS:
        vocab["\u0120" + word] = len(vocab)  # "Ġ" marks a leading space in byte-level BPE
    for letter in "abcdefghijklmnopqrstuvwxyz":
        vocab.setdefault(letter, len(vocab))
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    return GPT2Tokenizer(
        str(folder / "vocab.json"),
        str(folder / "merges.txt"),
        bos_token="</s>",
        eos_token="</s>",
        unk_token="<unk>",
        pad_token="<pad>",
    )


def _tiny_config(vocab_size: int, image_token_index: int | None) -> Blip2Config:
    return Blip2Config(
        vision_config=dict(
            hidden_size=16,
            intermediate_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            image_size=IMAGE_SIZE,
            patch_size=8,
        ),
        qformer_config=dict(
            hidden_size=16,
            num_hidden_layers=1,
            num_attention_heads=2,
            intermediate_size=32,
            encoder_hidden_size=16,
            vocab_size=vocab_size,
        ),
        text_config=dict(
            model_type="opt",
            vocab_size=vocab_size,
            hidden_size=16,
            num_hidden_layers=1,
            ffn_dim=32,
            num_attention_heads=2,
            max_position_embeddings=64,
            word_embed_proj_dim=16,
            bos_token_id=2,
            eos_token_id=2,
            pad_token_id=1,
        ),
        num_query_tokens=4,
        image_token_index=image_token_index,
    )


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("models")
    folder = root / BLIP2_DIR
    folder.mkdir()
    tokenizer = _write_opt_tokenizer(tmp_path_factory.mktemp("tok"))
    image_processor = BlipImageProcessor(size={"height": IMAGE_SIZE, "width": IMAGE_SIZE})
    processor = Blip2Processor(image_processor=image_processor, tokenizer=tokenizer, num_query_tokens=4)
    vocab_size = len(processor.tokenizer)  # + "<image>", added by the processor
    config = _tiny_config(vocab_size, processor.tokenizer.convert_tokens_to_ids("<image>"))
    torch.manual_seed(0)
    Blip2ForConditionalGeneration(config).save_pretrained(folder)
    processor.save_pretrained(folder)
    return root


def _old_style_folder(root: Path, source: Path, extra_rows: int) -> Path:
    """An old hub snapshot of the same weights: no ``image_token_index`` in config.json, a
    tokenizer without ``<image>``, an image-processor config and no processor config.

    ``extra_rows``: embedding rows beyond the tokenizer (OPT-2.7b: 50272 rows, 50265 tokens).
    """
    folder = root / BLIP2_DIR
    folder.mkdir(parents=True)
    tokenizer = _write_opt_tokenizer(root)
    tokenizer.save_pretrained(folder)
    BlipImageProcessor(size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}).save_pretrained(folder)
    model = Blip2ForConditionalGeneration.from_pretrained(source)
    config = _tiny_config(len(tokenizer) + extra_rows, None)
    old = Blip2ForConditionalGeneration(config)
    state = model.state_dict()
    if extra_rows == 0:  # drop the <image> row: the table then has no id for it
        for key, value in state.items():
            if value.shape[:1] == (len(tokenizer) + 1,):
                state[key] = value[:-1]
    old.load_state_dict(state)
    old.save_pretrained(folder)
    saved = json.loads((folder / "config.json").read_text())
    assert "image_token_index" not in saved or saved["image_token_index"] is None
    saved.pop("image_token_index", None)
    (folder / "config.json").write_text(json.dumps(saved))
    return root


@pytest.fixture(scope="module")
def video(tmp_path_factory) -> VideoInput:
    """13 frames 24x40 through a real mp4; each frame has its own colours (B != R everywhere)."""
    t = np.arange(13)[:, None, None]
    x = np.arange(40)[None, None, :]
    y = np.arange(24)[None, :, None]
    frames = np.stack(np.broadcast_arrays(18 * t + 2 * y + 10, 6 * x + 3 * t, 250 - 15 * t - y), -1)
    path = tmp_path_factory.mktemp("videos") / "0000.mp4"
    write_mp4(path, frames.astype(np.uint8), fps=8.0)
    decoded, fps = read_frames(path)
    return VideoInput(id="0000", path=path, frames=decoded, fps=fps)


def test_caption_indices_match_official_torch_linspace():
    for n in range(1, 400):
        official = torch.linspace(0, n - 1, 5).long().numpy()
        np.testing.assert_array_equal(caption_indices(n), official)
    np.testing.assert_array_equal(caption_indices(16), [0, 3, 7, 11, 15])
    with pytest.raises(ValueError, match="at least one frame"):
        caption_indices(0)


def test_caption_images_compat_is_bgr_fixed_is_rgb(video):
    idx = [0, 3, 6, 9, 12]
    size = (CAPTION_FRAME_SIZE, CAPTION_FRAME_SIZE)
    indices, compat = caption_images(video.frames, "compat")
    _, fixed = caption_images(video.frames, "fixed")
    np.testing.assert_array_equal(indices, idx)
    assert compat.shape == fixed.shape == (5, 224, 224, 3) and compat.dtype == np.uint8
    for k, i in enumerate(idx):
        bgr = cv2.cvtColor(video.frames[i], cv2.COLOR_RGB2BGR)
        rgb = video.frames[i]
        np.testing.assert_array_equal(compat[k], cv2.resize(bgr, size, interpolation=cv2.INTER_LINEAR))
        np.testing.assert_array_equal(fixed[k], cv2.resize(rgb, size, interpolation=cv2.INTER_LINEAR))
    np.testing.assert_array_equal(compat, fixed[..., ::-1])
    assert not np.array_equal(compat, fixed)
    with pytest.raises(ValueError, match="uint8"):
        caption_images(video.frames.astype(np.float32), "compat")


def _capture_pixels(metric: BlipBleu) -> tuple[list[torch.Tensor], torch.utils.hooks.RemovableHandle]:
    seen: list[torch.Tensor] = []

    def hook(module, args, kwargs):
        seen.append((args[0] if args else kwargs["pixel_values"]).detach().clone())

    return seen, metric.model.vision_model.register_forward_pre_hook(hook, with_kwargs=True)


@pytest.mark.parametrize("mode", ["compat", "fixed"])
def test_pipeline_end_to_end(models_dir, video, mode):
    metric = BlipBleu(models_dir, device="cpu", mode=mode, batch_size=2)
    seen, handle = _capture_pixels(metric)
    meta = {"prompt": "a red car on the beach", "attributes": {}}
    record = metric.score(video, meta)
    handle.remove()

    assert record["frame_indices"] == [0, 3, 6, 9, 12]
    # what the model saw: the official frames in the mode's channel order, one per generate call
    # (batch_size does not batch captions)
    assert [len(s) for s in seen] == [1] * 5
    _, images = caption_images(video.frames, mode)
    expected = metric.processor(images=list(images), return_tensors="pt")["pixel_values"]
    torch.testing.assert_close(torch.cat(seen), expected, rtol=0, atol=0)
    assert record["captions"] == caption_frames(metric.model, metric.processor, images)
    assert metric.runtime["dtypes"] == {"blip2": "float32", "qformer": "float32"}
    assert set(metric.runtime["weights"]) == {BLIP2_DIR + "/"}
    bleu = scoring.blip_bleu if mode == "compat" else scoring.blip_bleu_fixed
    assert record["prompt"] == meta["prompt"]
    assert record["blip_bleu"] == bleu(record["captions"], meta["prompt"])
    json.dumps(record)


def test_compat_and_fixed_feed_different_pixels(models_dir, video):
    fed = {}
    for mode in ("compat", "fixed"):
        metric = BlipBleu(models_dir, mode=mode, batch_size=8)
        seen, handle = _capture_pixels(metric)
        metric.score(video, {"prompt": "a dog", "attributes": {}})
        handle.remove()
        fed[mode] = torch.cat(seen)
    assert fed["compat"].shape == fed["fixed"].shape == (5, 3, IMAGE_SIZE, IMAGE_SIZE)
    assert (fed["compat"] - fed["fixed"]).abs().max() > 0.5


def test_captions_score_against_the_prompt(models_dir, video):
    """The score is BLEU of the model's own captions: a prompt equal to a caption scores ~1."""
    metric = BlipBleu(models_dir)
    captions = metric.score(video, {"prompt": "x", "attributes": {}})["captions"]
    best = max(captions, key=len)
    assert best, "the seeded tiny model should produce a non-empty caption"
    assert metric.score(video, {"prompt": best, "attributes": {}})["blip_bleu"] > 0.99


def test_aggregate_is_mean_times_100(models_dir):
    metric = BlipBleu(models_dir)
    out = metric.aggregate({"0000": {"blip_bleu": 0.2}, "0001": {"blip_bleu": 0.3}}, {})
    assert out["value"] == pytest.approx(25.0) and out["n"] == 2
    assert out["official"] == {"blip_bleu": pytest.approx(0.25)}


def test_registered_and_applies_to_all_700_prompts(models_dir):
    assert METRICS["blip_bleu"] is BlipBleu
    metric = BlipBleu(models_dir)
    metadata = load_metadata()
    assert len(metadata) == 700 and all(metric.applies_to(entry) for entry in metadata.values())


def test_missing_model_names_folder_and_source(tmp_path):
    with pytest.raises(ModelNotFoundError) as err:
        BlipBleu(tmp_path)
    message = str(err.value)
    assert str(tmp_path / BLIP2_DIR) in message and "Salesforce/blip2-opt-2.7b" in message


def test_old_folder_without_image_token_is_completed(models_dir, video, tmp_path):
    """An old snapshot's config (no image_token_index) gets the id the processor gives <image>;
    its captions equal those of the current-style folder with the same weights."""
    old_root = _old_style_folder(tmp_path / "old", models_dir / BLIP2_DIR, extra_rows=1)
    old = BlipBleu(old_root)
    new = BlipBleu(models_dir)
    tokens = len(GPT2Tokenizer.from_pretrained(old_root / BLIP2_DIR))
    assert old.model.config.image_token_index == tokens == new.model.config.image_token_index
    assert old.processor.num_query_tokens == 4
    meta = {"prompt": "a dog", "attributes": {}}
    assert old.score(video, meta) == new.score(video, meta)


def test_old_folder_without_room_for_the_image_token_is_refused(models_dir, tmp_path):
    old_root = _old_style_folder(tmp_path / "old", models_dir / BLIP2_DIR, extra_rows=0)
    with pytest.raises(IncompatibleModelError, match="image_token_index"):
        BlipBleu(old_root)


def test_float16_load_keeps_the_qformer_in_float16_as_the_official_run(models_dir, video, monkeypatch):
    """transformers 5 loads the Q-Former in float32 even for float16; the 2023 official run had
    it in float16. (The CUDA precision choice is forced here so the cast runs on the CPU.)"""
    from eval_crafter.metrics import blip_bleu

    monkeypatch.setattr(blip_bleu, "official_dtype", lambda device, dtype, fp32=False: torch.float16)
    metric = BlipBleu(models_dir)
    assert metric.runtime["dtypes"] == {"blip2": "float16", "qformer": "float16"}
    assert metric.model.query_tokens.dtype == torch.float16
    assert {p.dtype for p in metric.model.parameters()} == {torch.float16}
    record = metric.score(video, {"prompt": "a dog", "attributes": {}})
    assert len(record["captions"]) == 5
