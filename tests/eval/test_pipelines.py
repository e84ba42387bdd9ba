"""IS, amplitude and action pipelines end to end: generated videos, tiny random models of the
real architectures saved in the documented --models layout, no downloads."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from eval_models import (
    raft_to_original_layout,
    save_tiny_clip,
    tiny_videomae,
    videomae_to_mmaction_layout,
    write_video,
)
from torchvision.models.optical_flow import raft_large

from eval_crafter import scoring
from eval_crafter.metrics import ModelNotFoundError, VideoInput
from eval_crafter.metrics.action import (
    CLIP_DIR,
    MEAN,
    STD,
    VIDEOMAE_FILE,
    ActionScore,
    sample_test_clips,
    three_crop_views,
)
from eval_crafter.metrics.amplitude import (
    RAFT_FILE,
    MotionAmplitude,
    amplitude_record,
    convert_raft_state_dict,
)
from eval_crafter.metrics.inception import INCEPTION_FILE, FIDInceptionV3, InceptionScore
from eval_crafter.prompts import load_kinetics_labels
from tsm_video.data.video_frames import VideoFrames
from tsm_video.data.video_io import read_frames


def _video(path, **kw) -> VideoInput:
    write_video(path, **kw)
    frames, fps = read_frames(path)
    return VideoInput(id=path.stem, path=path, frames=frames, fps=fps)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    return tmp_path_factory.mktemp("models")


@pytest.fixture(scope="module")
def raft_source(models):
    torch.manual_seed(0)
    model = raft_large(weights=None).eval()
    path = models / RAFT_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(raft_to_original_layout(model.state_dict()), path)
    return model


@pytest.fixture(scope="module")
def inception_saved(models):
    torch.manual_seed(0)
    model = FIDInceptionV3().eval()
    torch.save(model.state_dict(), models / INCEPTION_FILE)
    return model


@pytest.fixture(scope="module")
def action_source(models):
    model = tiny_videomae()
    path = models / VIDEOMAE_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"meta": {"note": "tiny test model"}, "state_dict": videomae_to_mmaction_layout(model)}, path)
    save_tiny_clip(models / CLIP_DIR)
    return model


# --- missing weights ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "cls, name",
    [(InceptionScore, INCEPTION_FILE), (MotionAmplitude, "raft-things.pth"), (ActionScore, "VideoMAE")],
)
def test_missing_weights_name_the_file_and_its_source(tmp_path, cls, name):
    with pytest.raises(ModelNotFoundError) as info:
        cls(tmp_path)
    message = str(info.value)
    assert name in message and str(tmp_path) in message and "http" in message


# --- amplitude ---------------------------------------------------------------------------------


def test_raft_conversion_round_trip(raft_source):
    original = raft_to_original_layout(raft_source.state_dict())
    for key in (
        "module.fnet.conv1.weight",
        "module.cnet.norm1.running_var",
        "module.cnet.layer2.0.norm3.weight",
        "module.cnet.layer3.0.downsample.1.bias",
        "module.update_block.encoder.convc1.weight",
        "module.update_block.gru.convq2.bias",
        "module.update_block.mask.2.weight",
    ):
        assert key in original
    converted = convert_raft_state_dict(original)
    assert converted.keys() == raft_source.state_dict().keys()
    assert all(torch.equal(converted[k], v) for k, v in raft_source.state_dict().items())


@pytest.fixture(scope="module")
def amp_video(tmp_path_factory, raft_source):
    """One pair at 122x126 (torchvision RAFT needs >= 128 px after padding), and the flow of
    the source model run directly: replicate pad, [-1, 1], 20 updates, last flow."""
    video = _video(tmp_path_factory.mktemp("amp") / "0004.mp4", num_frames=2, size=(122, 126))
    x = torch.from_numpy(video.frames).permute(0, 3, 1, 2).float()
    x = 2 * (F.pad(x, scoring.sintel_padding(122, 126), mode="replicate") / 255.0) - 1
    with torch.no_grad():
        direct = raft_source(x[:-1], x[1:], num_flow_updates=20)[-1].numpy()
    assert direct.shape == (1, 2, 128, 128)  # sintel padding (3, 3, 1, 1)
    return video, direct


@pytest.mark.slow
def test_amplitude_end_to_end(models, amp_video):
    video, direct = amp_video
    metric = MotionAmplitude(models, batch_size=2)
    meta = {"prompt": "x", "attributes": {"amp": "large"}}
    record = metric.score(video, meta)  # weights converted from the original layout
    assert record["pair_means"] == pytest.approx(scoring.pair_flow_means(direct), rel=1e-4)
    with VideoFrames(video.path) as lazy:  # the runner's lazy frames: the same batches, the same flows
        assert np.array_equal(metric.flows(lazy), metric.flows(video.frames))
    flow, pred, hit = scoring.motion_ac_score(direct, "large")
    assert record["flow_score"] == pytest.approx(flow, rel=1e-4)
    assert (record["amp_pred"], record["motion_ac_score"], record["amp"]) == (pred, hit, "large")
    # fixed mode differs only in the scoring rule applied to the same flows
    fixed = amplitude_record(direct, meta, (122, 126), "fixed")
    assert fixed["flow_score"] == pytest.approx(scoring.motion_ac_score_fixed(direct, "large", (122, 126))[0])
    no_amp = amplitude_record(direct, {"prompt": "x", "attributes": {}}, (122, 126), "compat")
    assert "motion_ac_score" not in no_amp and np.isfinite(no_amp["flow_score"])
    agg = metric.aggregate({"0004": record, "0005": no_amp}, {})
    assert agg["n"] == 1 and agg["n_flow"] == 2
    assert agg["value"] == 100 * record["motion_ac_score"]
    assert agg["official"]["flow_score"] == pytest.approx((record["flow_score"] + no_amp["flow_score"]) / 2)


# --- IS ----------------------------------------------------------------------------------------


def test_fid_inception_blocks_pool_as_the_tf_graph(inception_saved):
    torch.manual_seed(2)
    x = torch.randn(1, 288, 9, 9)
    block = inception_saved.Mixed_5d
    with torch.no_grad():
        out = block(x)
        pool = block.branch_pool(F.avg_pool2d(x, 3, 1, 1, count_include_pad=False))
    assert torch.allclose(out[:, -pool.shape[1] :], pool)
    x = torch.randn(1, 2048, 4, 4)
    block = inception_saved.Mixed_7c
    with torch.no_grad():
        out = block(x)
        pool = block.branch_pool(F.max_pool2d(x, 3, 1, 1))
    assert torch.allclose(out[:, -pool.shape[1] :], pool)


@pytest.mark.slow
def test_inception_score_end_to_end(tmp_path, models, inception_saved):
    metric = InceptionScore(models, batch_size=3)
    videos = [
        _video(tmp_path / f"000{i}.mp4", num_frames=n, size=(24, 32), seed=i) for i, n in enumerate((4, 3, 3))
    ]  # 10 frames: the fewest 10 splits allow
    records = {v.id: metric.score(v, {}) for v in videos}
    probs = records["0000"]["probs"]
    with VideoFrames(videos[0].path) as lazy:  # the runner's lazy frames, read in chunks of 3
        assert np.array_equal(metric.probabilities(lazy), probs)
    assert probs.shape == (4, 1008) and probs.dtype == np.float32
    np.testing.assert_allclose(probs.sum(1), 1.0, rtol=1e-5)
    # the official forward: bilinear 299, 2x-1, biasless fc, softmax
    x = torch.from_numpy(videos[0].frames[:1]).permute(0, 3, 1, 2).float() / 255
    with torch.no_grad():
        ref = inception_saved(x).numpy()
    np.testing.assert_allclose(probs[:1], ref, rtol=1e-4, atol=1e-6)
    reordered = {k: records[k] for k in ("0002", "0000", "0001")}
    agg = metric.aggregate(reordered, {})
    expected = scoring.inception_score([records[k]["probs"] for k in ("0002", "0000", "0001")])
    assert (agg["value"], agg["std"]) == pytest.approx(expected)
    assert agg["order"] == ["0002", "0000", "0001"] and agg["frames"] == 10
    assert agg["official"] == {"IS": agg["value"]}
    fixed = InceptionScore(models, mode="fixed")
    assert fixed.aggregate(reordered, {})["order"] == ["0000", "0001", "0002"]


# --- action ------------------------------------------------------------------------------------


def test_mmaction_test_sampling_and_crops():
    np.testing.assert_array_equal(sample_test_clips(16)[0], np.arange(16) * 4 % 16)
    clips = sample_test_clips(16)
    assert clips.shape == (5, 16) and (clips == clips[0]).all()
    np.testing.assert_array_equal(sample_test_clips(100)[:, 0], [0, 10, 20, 29, 39])
    assert sample_test_clips(100).max() == 99
    views = three_crop_views(np.zeros((2, 120, 160, 3), np.uint8))
    assert views.shape == (3, 2, 224, 224, 3)
    frames = np.zeros((1, 160, 120, 3), np.uint8)
    frames[0, :, :, 0] = np.arange(160)[:, None]  # rows encode y
    views = three_crop_views(frames)  # portrait: crops move down
    assert views[0, 0, 0, 0, 0] < views[2, 0, 0, 0, 0] < views[1, 0, 0, 0, 0]


@pytest.mark.slow
def test_action_end_to_end(tmp_path, models, action_source):
    metric = ActionScore(models, batch_size=4)
    x = torch.randn(2, 16, 3, 224, 224)
    source = action_source
    source.fc_norm.eps = 1e-6
    with torch.no_grad():
        np.testing.assert_allclose(
            metric.recognizer(pixel_values=x).logits.numpy(),
            source(pixel_values=x).logits.numpy(),
            rtol=1e-4,
            atol=1e-5,
        )
    meta = {"prompt": "a man playing guitar", "attributes": {"action": "playing guitar"}}
    assert metric.applies_to(meta) and not metric.applies_to({"prompt": "x", "attributes": {}})
    video = _video(tmp_path / "0010.mp4", num_frames=20, size=(48, 64))
    probs = metric.class_probabilities(video.frames)
    assert probs.shape == (400,) and probs.sum() == pytest.approx(1.0, rel=1e-5)
    # per clip, as mmaction2 crops: the metric crops the distinct frames once, then builds clips
    clips = video.frames[sample_test_clips(len(video.frames))]
    views = (np.concatenate([three_crop_views(c) for c in clips]) - MEAN) / STD
    with torch.no_grad():
        per_clip = (
            torch.cat(
                [
                    metric.recognizer(
                        pixel_values=torch.from_numpy(views[i : i + 4]).permute(0, 1, 4, 2, 3)
                    ).logits.softmax(-1)
                    for i in range(0, len(views), 4)
                ]
            )
            .mean(0)
            .numpy()
        )
    assert np.array_equal(probs, per_clip)  # the same views in the same batches: bit for bit
    with VideoFrames(video.path) as lazy:
        assert np.array_equal(metric.class_probabilities(lazy), probs)
    record = metric.score(video, meta)
    labels = list(load_kinetics_labels())
    assert record["action_score"] == pytest.approx(
        scoring.action_score(probs, labels, "playing guitar", metric.encode_text), abs=1e-6
    )
    assert [i for i, _ in record["top5"]] == [i for i, _ in scoring.top5(probs)]
    assert record["top5_labels"] == [labels[i] for i, _ in record["top5"]]
    agg = metric.aggregate({"0010": record}, {})
    assert agg["value"] == pytest.approx(100 * record["action_score"]) and agg["n"] == 1
