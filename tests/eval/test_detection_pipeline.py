"""Count / Color pipelines end to end with tiny random GroundingDINO and SAM built from configs."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from eval_models import deaot_state_dict
from transformers import (
    BertConfig,
    BertTokenizer,
    GroundingDinoConfig,
    GroundingDinoForObjectDetection,
    GroundingDinoImageProcessor,
    GroundingDinoProcessor,
    SamConfig,
    SamImageProcessor,
    SamMaskDecoderConfig,
    SamModel,
    SamProcessor,
    SamPromptEncoderConfig,
    SamVisionConfig,
    SwinConfig,
)

from eval_crafter import scoring
from eval_crafter.deaot import DeAOT, DeAOTTracker
from eval_crafter.metrics import METRICS, ModelNotFoundError, VideoInput
from eval_crafter.metrics.detection import (
    BOX_THRESHOLD,
    DEAOT_FILE,
    GROUNDING_DINO_DIR,
    SAM_DIR,
    ColorMetric,
    CountMetric,
    boxes_to_pixels,
    detect_and_segment,
    grounding_caption,
    grounding_size,
    merge_masks,
    parse_attribute,
    segment_boxes,
)
from eval_crafter.prompts import load_metadata
from tsm_video.data.video_io import read_frames, write_mp4

NUM_QUERIES = 10
EVERY = "every-frame"  # the detection-only schedule; the tracker schedule is tested at the end
VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", ".", "dog", "car", "red", "fire", "hydrant", "person"]


def _save_grounding_dino(folder: Path, vocab_dir: Path) -> None:
    (vocab_dir / "vocab.txt").write_text("\n".join(VOCAB) + "\n")
    processor = GroundingDinoProcessor(
        image_processor=GroundingDinoImageProcessor(size={"shortest_edge": 64, "longest_edge": 128}),
        tokenizer=BertTokenizer(str(vocab_dir / "vocab.txt")),
    )
    config = GroundingDinoConfig(
        backbone_config=SwinConfig(
            embed_dim=8,
            depths=[1, 1, 1, 1],
            num_heads=[1, 1, 2, 2],
            window_size=4,
            image_size=32,
            out_features=["stage2", "stage3", "stage4"],
        ).to_dict(),
        text_config=BertConfig(
            vocab_size=len(VOCAB),
            hidden_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            intermediate_size=32,
            max_position_embeddings=64,
        ).to_dict(),
        d_model=32,
        encoder_layers=1,
        decoder_layers=2,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_ffn_dim=32,
        decoder_ffn_dim=32,
        num_queries=NUM_QUERIES,
        encoder_n_points=2,
        decoder_n_points=2,
    )
    torch.manual_seed(0)
    GroundingDinoForObjectDetection(config).save_pretrained(folder)
    processor.save_pretrained(folder)


def _save_sam(folder: Path) -> None:
    config = SamConfig(
        vision_config=SamVisionConfig(
            hidden_size=16,
            output_channels=16,
            num_hidden_layers=1,
            num_attention_heads=2,
            image_size=64,
            patch_size=8,
            mlp_dim=32,
            global_attn_indexes=[0],
            window_size=4,
            num_pos_feats=8,
        ).to_dict(),
        prompt_encoder_config=SamPromptEncoderConfig(
            hidden_size=16, image_size=64, patch_size=8, mask_input_channels=4
        ).to_dict(),
        mask_decoder_config=SamMaskDecoderConfig(
            hidden_size=16, num_hidden_layers=2, num_attention_heads=2, mlp_dim=32, iou_head_hidden_dim=16
        ).to_dict(),
    )
    torch.manual_seed(1)
    SamModel(config).save_pretrained(folder)
    image_processor = SamImageProcessor(
        size={"longest_edge": 64}, pad_size={"height": 64, "width": 64}, mask_size={"longest_edge": 16}
    )
    SamProcessor(image_processor=image_processor).save_pretrained(folder)


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("models")
    _save_grounding_dino(root / GROUNDING_DINO_DIR, tmp_path_factory.mktemp("vocab"))
    _save_sam(root / SAM_DIR)
    return root


@pytest.fixture(scope="module")
def video(tmp_path_factory) -> VideoInput:
    """11 frames 24x40 (processed: 0, 5, 10) through a real mp4, a moving red square on blue."""
    frames = np.zeros((11, 24, 40, 3), np.uint8)
    frames[...] = (30, 60, 200)
    for t in range(11):
        frames[t, 6:16, 2 * t : 2 * t + 12] = (220, 20, 20)
    path = tmp_path_factory.mktemp("videos") / "0000.mp4"
    write_mp4(path, frames, fps=8.0)
    decoded, fps = read_frames(path)
    return VideoInput(id="0000", path=path, frames=decoded, fps=fps)


@pytest.fixture(scope="module")
def count_metric(models_dir) -> CountMetric:
    return CountMetric(models_dir, device="cpu", mode="compat", batch_size=2, detection=EVERY)


@pytest.fixture(scope="module")
def reference(count_metric, video) -> dict[str, tuple[list[np.ndarray], list]]:
    """``detect_and_segment`` at the official threshold on the processed frames, per object."""
    return {
        obj: detect_and_segment(count_metric.models, video.frames[::5], obj, 0.6, 4) for obj in ("dog", "car")
    }


def test_parse_attribute_and_caption():
    assert parse_attribute("2 dog") == ("2", "dog")
    assert parse_attribute("red fire hydrant") == ("red", "fire hydrant")
    with pytest.raises(ValueError, match="value and an object"):
        parse_attribute("dog")
    assert grounding_caption("  Fire Hydrant ") == "fire hydrant."
    assert grounding_caption("dog.") == "dog."
    metadata = load_metadata()
    counts = [e["attributes"]["count"] for e in metadata.values() if "count" in e["attributes"]]
    colors = [e["attributes"]["color"] for e in metadata.values() if "color" in e["attributes"]]
    assert len(counts) == 50 and len(colors) == 46
    assert all(float(parse_attribute(a)[0]) >= 1 for a in counts)
    assert {parse_attribute(a)[0] for a in colors} <= {"red", "orange", "yellow", "green", "blue", "white"}


def test_grounding_size_is_the_official_random_resize():
    assert grounding_size(320, 512) == (800, 1280)
    assert grounding_size(512, 320) == (1280, 800)
    assert grounding_size(720, 1280) == (750, 1333)
    assert grounding_size(480, 854) == (749, 1332)  # long side from the rounded short side (HF: 1333)
    assert grounding_size(800, 800) == (800, 800)
    assert grounding_size(24, 40, 32, 64) == (32, 53)
    assert grounding_size(8, 24, 32, 64) == (21, 63)


def test_boxes_to_pixels_scales_then_truncates():
    boxes = torch.tensor([[0.5, 0.5, 0.5, 0.5], [0.01, 0.99, 0.05, 0.1], [0.333, 0.25, 0.2, 0.3]])
    pixels = boxes_to_pixels(boxes, height=24, width=40)
    assert pixels.dtype == np.int64
    # (20-10, 12-6, 20+10, 12+6); (0.4-1, 23.76-1.2, 0.4+1, 23.76+1.2): -0.6 truncates to 0
    np.testing.assert_array_equal(pixels, [[10, 6, 30, 18], [0, 22, 1, 24], [9, 2, 17, 9]])
    assert boxes_to_pixels(torch.zeros(0, 4), 24, 40).shape == (0, 4)


def test_merge_masks_ids_dtypes_and_overwrite():
    a = np.zeros((4, 5), bool)
    a[:2] = True
    b = np.zeros((4, 5), bool)
    b[1:3] = True
    c = np.zeros((4, 5), bool)
    c[:2] = True  # covers all of mask 1 -> id 1 vanishes
    merged = merge_masks(np.stack([a, b]), (4, 5))
    assert merged.dtype == np.uint8
    np.testing.assert_array_equal(merged[:, 0], [1, 2, 2, 0])
    assert set(np.unique(merge_masks(np.stack([a, b, c]), (4, 5)))) == {0, 2, 3}
    empty = merge_masks(np.zeros((0, 4, 5), bool), (4, 5))
    assert empty.dtype == np.float64 and empty.shape == (4, 5) and not empty.any()
    with pytest.raises(ValueError, match="uint8"):
        merge_masks(np.zeros((256, 4, 5), bool), (4, 5))


def _frames(video):
    return video.frames[::5]


def test_detect_and_segment_masks(count_metric, video):
    seen = []
    handle = count_metric.models.detector.register_forward_pre_hook(
        lambda m, args, kwargs: seen.append(kwargs["pixel_values"].shape), with_kwargs=True
    )
    masks, detections = detect_and_segment(
        count_metric.models, _frames(video), "dog", box_threshold=0.0, batch_size=2
    )
    handle.remove()
    assert [s[0] for s in seen] == [2, 1]
    assert all(tuple(s[2:]) == grounding_size(24, 40, 64, 128) == (64, 106) for s in seen)
    assert len(masks) == len(detections) == 3
    for mask, (boxes, scores) in zip(masks, detections):
        assert len(boxes) == len(scores) == NUM_QUERIES  # threshold 0: every query is a box
        assert mask.dtype == np.uint8 and mask.shape == (24, 40)
        assert set(np.unique(mask)) <= set(range(NUM_QUERIES + 1))


def test_sam_gets_official_box_coordinates_and_batching_is_exact(count_metric, video):
    frames = _frames(video)[:2]
    boxes = [np.array([[2, 3, 20, 15], [10, 0, 39, 23], [0, 5, 12, 9]]), np.array([[5, 5, 30, 20]])]
    seen = []
    handle = count_metric.models.segmenter.prompt_encoder.register_forward_hook(
        lambda m, args, kwargs, out: seen.append(kwargs["input_boxes"].clone()), with_kwargs=True
    )
    sam, processor = count_metric.models.segmenter, count_metric.models.segmenter_processor
    masks = segment_boxes(sam, processor, frames, boxes, batch_size=8)
    handle.remove()
    # two decoder passes per frame (box, then box + best logits), boxes as the processor scales them
    assert len(seen) == 4
    official = processor(images=[frames[0]], input_boxes=[boxes[0].tolist()], return_tensors="pt")
    torch.testing.assert_close(seen[0][:, 0], official["input_boxes"][0].float())
    torch.testing.assert_close(seen[1], seen[0])
    assert [m.shape for m in masks] == [(3, 24, 40), (1, 24, 40)] and masks[0].dtype == bool
    one_by_one = segment_boxes(sam, processor, frames, boxes, batch_size=1)
    for a, b in zip(masks, one_by_one):
        np.testing.assert_array_equal(a, b)


def test_count_end_to_end(models_dir, video, reference):
    masks, detections = reference["dog"]
    records = {}
    for mode in ("compat", "fixed"):
        metric = CountMetric(models_dir, mode=mode, batch_size=2, detection=EVERY)
        assert metric.box_threshold == BOX_THRESHOLD == 0.6
        records[mode] = metric.score(video, {"prompt": "two dogs", "attributes": {"count": "2 dog"}})
    record = records["compat"]
    assert records["fixed"] == record  # count has no official bug to fix
    assert record["object"] == "dog" and record["gt_count"] == 2.0
    assert record["frame_indices"] == [0, 5, 10]
    assert record["boxes"] == [b.tolist() for b, _ in detections]
    assert any(record["boxes"]), "the seeded tiny detector should find boxes above 0.6"
    assert all(s > 0.6 for frame in record["box_scores"] for s in frame)
    assert record["mask_dtypes"] == [str(m.dtype) for m in masks]
    assert record["det_count_frames"] == scoring.count_per_frame(masks)
    assert record["count_score"] == scoring.count_score(masks, "2")
    assert record["detection"] == EVERY and record["frame_roles"] == ["detect"] * 3
    json.dumps(record)


def test_color_end_to_end_compat_and_fixed(models_dir, video, reference):
    meta = {"prompt": "a red car", "attributes": {"color": "red car"}}
    frames = _frames(video)
    masks, _ = reference["car"]
    for mode, score_fn in (("compat", scoring.color_score), ("fixed", scoring.color_score_fixed)):
        record = ColorMetric(models_dir, mode=mode, batch_size=4, detection=EVERY).score(video, meta)
        assert record["object"] == "car" and record["gt_color"] == "red"
        assert record["color_score"] == score_fn(frames, masks, "red")
        assert len(record["per_frame_color"]) == len(record["per_frame_avg_hue"]) == 3
        json.dumps(record)


def test_no_detection_keeps_official_quirks(models_dir, video):
    """No box anywhere: float64 zero masks; count 0; compat colour NaN -> "red" hits, fixed misses."""
    meta = {"prompt": "a red car", "attributes": {"color": "red car", "count": "2 car"}}
    colors = {}
    for mode in ("compat", "fixed"):
        metric = ColorMetric(models_dir, mode=mode, detection=EVERY)
        metric.box_threshold = 1.0
        colors[mode] = metric.score(video, meta)
    assert colors["compat"]["mask_dtypes"] == ["float64"] * 3
    assert colors["compat"]["per_frame_avg_hue"] == [None] * 3
    assert colors["compat"]["per_frame_color"] == ["red"] * 3 and colors["compat"]["color_score"] == 1.0
    assert colors["fixed"]["per_frame_color"] == [None] * 3 and colors["fixed"]["color_score"] == 0.0
    counter = CountMetric(models_dir, detection=EVERY)
    counter.box_threshold = 1.0
    record = counter.score(video, meta)
    assert record["det_count_frames"] == [0, 0, 0] and record["count_score"] == 0.0


def test_applies_to_and_aggregate(count_metric, models_dir):
    metadata = load_metadata()
    color_metric = ColorMetric(models_dir, detection=EVERY)
    assert sum(count_metric.applies_to(e) for e in metadata.values()) == 50
    assert sum(color_metric.applies_to(e) for e in metadata.values()) == 46
    assert METRICS["count"] is CountMetric and METRICS["color"] is ColorMetric
    out = count_metric.aggregate({"a": {"count_score": 0.5}, "b": {"count_score": 0.25}}, metadata)
    assert out["value"] == pytest.approx(37.5) and out["n"] == 2
    assert out["official"] == {"count_score": pytest.approx(0.375)}
    empty = color_metric.aggregate({}, metadata)
    assert math.isnan(empty["value"]) and empty["n"] == 0


def test_missing_models_name_folder_and_source(models_dir, tmp_path):
    with pytest.raises(ModelNotFoundError) as err:
        CountMetric(tmp_path)
    assert str(tmp_path / GROUNDING_DINO_DIR) in str(err.value)
    assert "IDEA-Research/grounding-dino-tiny" in str(err.value)
    (tmp_path / GROUNDING_DINO_DIR).symlink_to(models_dir / GROUNDING_DINO_DIR)
    with pytest.raises(ModelNotFoundError) as err:
        ColorMetric(tmp_path)
    assert str(tmp_path / SAM_DIR) in str(err.value) and "facebook/sam-vit-base" in str(err.value)


def test_count_and_color_share_one_copy_of_the_models(count_metric, models_dir):
    color = ColorMetric(models_dir, device="cpu", mode="fixed", detection=EVERY)
    assert color.models is count_metric.models and not color.models.autocast
    assert color.runtime["dtypes"] == {"grounding_dino": "float32", "sam": "float32"}
    assert set(color.runtime["weights"]) == {GROUNDING_DINO_DIR + "/", SAM_DIR + "/"}


@pytest.fixture(scope="module")
def tracked_models_dir(models_dir, tmp_path_factory) -> Path:
    """The tiny detector and segmenter plus a DeAOT checkpoint (deterministic weights)."""
    root = tmp_path_factory.mktemp("tracked_models")
    for name in (GROUNDING_DINO_DIR, SAM_DIR):
        (root / name).symlink_to(models_dir / name)
    shapes = {k: tuple(v.shape) for k, v in DeAOT().state_dict().items()}
    (root / DEAOT_FILE).parent.mkdir()
    # as the official file: a DataParallel "module." prefix under "state_dict"
    state = {f"module.{k}": v for k, v in deaot_state_dict(shapes).items()}
    torch.save({"state_dict": state}, root / DEAOT_FILE)
    return root


@pytest.mark.slow
def test_count_and_color_follow_the_official_track_schedule(tracked_models_dir, video, reference):
    """Detection on processed frame 1 only (a 3-processed-frame clip never reaches p = 9);
    frames 2 and 3 are DeAOT's, fed with frame 1's id map, memory updated each frame."""
    meta = {"prompt": "two dogs", "attributes": {"count": "2 dog", "color": "red dog"}}
    count = CountMetric(tracked_models_dir, batch_size=2)
    color = ColorMetric(tracked_models_dir, mode="fixed")
    assert count.models.tracker_model is color.models.tracker_model  # one network for both
    assert count.runtime["detection"] == "track" and DEAOT_FILE in count.runtime["weights"]
    shapes = {k: tuple(v.shape) for k, v in DeAOT().state_dict().items()}
    for key, value in deaot_state_dict(shapes).items():  # strictly loaded, prefix stripped
        torch.testing.assert_close(count.models.tracker_model.state_dict()[key], value, rtol=0, atol=0)
    record = count.score(video, meta)
    assert record["frame_roles"] == ["detect", "track", "track"]
    detected, found = reference["dog"]
    assert record["boxes"] == [found[0][0].tolist(), None, None]
    tracker = DeAOTTracker(count.models.tracker_model)
    frames = _frames(video)
    tracker.add_reference(frames[0], detected[0], int(detected[0].max()))
    expected = [detected[0]] + [tracker.track(f, update_memory=True) for f in frames[1:]]
    assert record["mask_dtypes"] == [str(m.dtype) for m in expected]
    assert record["det_count_frames"] == scoring.count_per_frame(expected)
    assert record["count_score"] == scoring.count_score(expected, "2")
    assert color.score(video, meta)["color_score"] == scoring.color_score_fixed(frames, expected, "red")


def test_track_schedule_without_detection_tracks_nothing(tracked_models_dir, video):
    """No box on frame 0: the official reference is float64 zeros with 0 objects, and DeAOT
    (every id above 0 excluded) returns uint8 zeros."""
    counter = CountMetric(tracked_models_dir)
    counter.box_threshold = 1.0
    record = counter.score(video, {"prompt": "x", "attributes": {"count": "2 dog"}})
    assert record["mask_dtypes"] == ["float64", "uint8", "uint8"]
    assert record["det_count_frames"] == [0, 0, 0] and record["count_score"] == 0.0


def test_cli_runs_either_schedule_and_labels_the_alternative(tracked_models_dir, video, tmp_path):
    from eval_crafter.report import load_report
    from tsm_video.cli import main

    meta = {"0000": {"prompt": "two dogs", "attributes": {"count": "2 dog"}}}
    (tmp_path / "meta.json").write_text(json.dumps(meta))
    reports = {}
    for schedule in ("track", "every-frame"):
        out = tmp_path / f"{schedule}.json"
        args = [
            "eval",
            "evalcrafter",
            "--videos",
            str(video.path.parent),
            "--models",
            str(tracked_models_dir),
            "--metrics",
            "count",
            "--prompts",
            str(tmp_path / "meta.json"),
            "--device",
            "cpu",
            "--detection",
            schedule,
            "--out",
            str(out),
            "--no-progress",
        ]
        assert main(args) == 0
        reports[schedule] = load_report(out)
    assert reports["track"]["label"] == "EvalCrafter (compat)"
    assert "detection on every frame, not the official tracker" in reports["every-frame"]["label"]
    roles = {s: r["per_video"]["0000"]["count"]["frame_roles"] for s, r in reports.items()}
    assert roles == {"track": ["detect", "track", "track"], "every-frame": ["detect"] * 3}
    assert reports["track"]["runtime"]["count"]["detection"] == "track"
    assert DEAOT_FILE not in reports["every-frame"]["runtime"]["count"]["weights"]
