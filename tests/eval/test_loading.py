"""Model loading and running: the models-folder check, device/precision/weights in the cache
key, VideoMAE's non-strict load (sinusoid fallback) and the mmengine metadata allow-list."""

from __future__ import annotations

import math
import os
import pickle
import sys
import types

import numpy as np
import pytest
import torch
from eval_models import tiny_videomae, videomae_to_mmaction_layout, write_video
from transformers.models.videomae.modeling_videomae import get_sinusoid_encoding_table

from eval_crafter import runner
from eval_crafter.checkpoint import InertMetadata, load_checkpoint
from eval_crafter.metrics import METRICS, Metric
from eval_crafter.metrics.action import VIDEOMAE_FILE, load_videomae, sinusoid_position_table
from eval_crafter.metrics.base import (
    IncompatibleModelError,
    MissingModelsError,
    ModelFile,
    check_models_folder,
)
from eval_crafter.metrics.runtime import official_dtype, resolve_device, weights_identity
from eval_crafter.runner import DEFAULT_METRICS, EvalSettings, evaluate
from tsm_video.cli import main

F32_EPS = float(np.finfo(np.float32).eps)

# --- models folder -------------------------------------------------------------------------------


def test_every_missing_file_is_listed_in_one_error(tmp_path):
    needed = [f for name in DEFAULT_METRICS for f in METRICS[name].required_files()]
    with pytest.raises(MissingModelsError) as err:
        check_models_folder(tmp_path, needed)
    relpaths = [
        "pt_inception-2015-12-05-6726825d.pth",
        VIDEOMAE_FILE,
        "clip-vit-base-patch32/",
        "RAFT/models/raft-things.pth",
        "blip2-opt-2.7b/",
        "grounding-dino-tiny/",
        "sam-vit-base/",
        "ckpt/R50_DeAOTL_PRE_YTB_DAV.pth",
    ]
    assert [m.relpath for m in err.value.missing] == relpaths
    message = str(err.value)
    assert message.startswith("8 model file(s) missing") and all(r in message for r in relpaths)
    assert message.count("grounding-dino-tiny/") == 1 and "for color, count;" in message  # shared, merged
    # present files drop out; a transformers folder needs config.json and a weights file
    (tmp_path / "pt_inception-2015-12-05-6726825d.pth").write_bytes(b"x")
    sam = tmp_path / "sam-vit-base"
    sam.mkdir()
    (sam / "config.json").write_text("{}")
    with pytest.raises(MissingModelsError) as err:
        check_models_folder(tmp_path, needed)
    assert [m.relpath for m in err.value.missing] == relpaths[1:]
    (sam / "model.safetensors").write_bytes(b"x")
    with pytest.raises(MissingModelsError) as err:
        check_models_folder(tmp_path, needed)
    assert "sam-vit-base/" not in [m.relpath for m in err.value.missing]


def test_cli_checks_the_models_folder_before_any_video(tmp_path, capsys):
    videos = tmp_path / "videos"
    videos.mkdir()
    write_video(videos / "0000.mp4", num_frames=2)
    args = [
        "eval",
        "evalcrafter",
        "--videos",
        str(videos),
        "--models",
        str(tmp_path / "models"),
        "--metrics",
        "count,blip_bleu",
        "--out",
        str(tmp_path / "r.json"),
        "--no-progress",
    ]
    assert main([*args, "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert "4 model file(s) missing" in err and err.count("\n") == 1  # one line, every file named
    assert not (tmp_path / "r.cache").exists()
    with pytest.raises(MissingModelsError, match="4 model file"):
        main([*args, "--device", "cpu", "--debug"])
    if not torch.cuda.is_available():
        assert main([*args, "--device", "cuda"]) == 2
        assert "CUDA is not available" in capsys.readouterr().err


# --- device, precision, weights identity, cache key ----------------------------------------------


def test_device_and_official_dtype():
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto").type == expected
    assert resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(ValueError, match="unknown device"):
        resolve_device("tpu9")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            resolve_device("cuda")
    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    assert official_dtype(cuda, torch.float16) == torch.float16
    assert official_dtype(cuda, torch.float16, fp32=True) == torch.float32
    assert official_dtype(cpu, torch.float16) == torch.float32


def test_weights_identity_follows_content_size_and_mtime(tmp_path):
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    weights = folder / "model.safetensors"
    weights.write_bytes(b"a" * 100)
    first = weights_identity(folder)
    assert first == weights_identity(folder) and first["files"] == 2 and first["size"] == 102
    weights.write_bytes(b"b" * 100)  # same size, new content
    second = weights_identity(folder)
    assert second["digest"] != first["digest"]
    stat = weights.stat()
    os.utime(weights, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # touched
    assert weights_identity(folder)["digest"] != second["digest"]
    assert weights_identity(weights)["files"] == 1


class _TinyWeightsMetric(Metric):
    """A metric with one weights file: its record is the file's first byte, so reuse shows."""

    name = "tiny"

    def __init__(self, models_dir, device="cpu", mode="compat", batch_size=8, fp32=False):
        super().__init__(models_dir, device, mode, batch_size, fp32)
        self.record_weights("tiny.pth")
        self.record_dtype("tiny", torch.float32 if fp32 or self.device.type == "cpu" else torch.float16)
        self.calls = 0

    @classmethod
    def required_files(cls, mode="compat"):
        return [ModelFile("tiny.pth", "tiny weights", "the test", (cls.name,))]

    def score(self, video, meta):
        type(self).calls += 1
        return {"value": float((self.models_dir / "tiny.pth").read_bytes()[0])}

    def aggregate(self, records, metadata):
        return {"value": float(np.mean([r["value"] for r in records.values()])), "n": len(records)}


def test_cache_key_holds_device_dtype_and_weights(tmp_path, monkeypatch):
    """A CPU float32 record is not reused by a run on another device, in another precision
    or with other weights; the report says which runtime made it."""
    monkeypatch.setattr(runner, "get_metric", lambda name, backend: _TinyWeightsMetric)
    _TinyWeightsMetric.calls = 0
    models, videos = tmp_path / "models", tmp_path / "videos"
    models.mkdir()
    videos.mkdir()
    (models / "tiny.pth").write_bytes(bytes([7]))
    write_video(videos / "0000.mp4", num_frames=2)

    def run(**kw):
        before = _TinyWeightsMetric.calls
        settings = dict(
            videos=videos,
            models=models,
            out=tmp_path / "r.json",
            metrics=("tiny",),
            progress=False,
            device="cpu",
        )
        report = evaluate(EvalSettings(**{**settings, **kw}))
        return _TinyWeightsMetric.calls - before, report

    computed, report = run()
    assert computed == 1 and report["runtime"]["tiny"]["device"] == "cpu"
    assert report["runtime"]["tiny"]["dtypes"] == {"tiny": "float32"}
    assert set(report["runtime"]["tiny"]["weights"]["tiny.pth"]) == {"size", "files", "digest"}
    assert run()[0] == 0  # same runtime: cached
    computed, report = run(device="meta")  # another device (meta stands in for CUDA here)
    assert computed == 1 and report["runtime"]["tiny"]["dtypes"] == {"tiny": "float16"}
    assert run(fp32=True)[0] == 1  # forced precision
    assert run()[0] == 1  # one record per video: the fp32 run replaced the plain CPU one
    assert run()[0] == 0
    (models / "tiny.pth").write_bytes(bytes([9]))  # other weights
    computed, report = run()
    assert computed == 1 and report["metrics"]["tiny"]["value"] == 9.0


# --- VideoMAE loading ----------------------------------------------------------------------------


def test_sinusoid_table_is_the_closed_form():
    table = sinusoid_position_table(10, 6)
    assert table.shape == (1, 10, 6) and table.dtype == torch.float32
    for t in range(10):
        for j in range(6):
            angle = t / 10000 ** (2 * (j // 2) / 6)
            value = math.sin(angle) if j % 2 == 0 else math.cos(angle)
            # one float32 rounding of a float64 value of magnitude <= 1: half an ulp at 1
            assert abs(table[0, t, j].item() - value) <= F32_EPS / 2
    # transformers' numpy table is the same formula, both rounded once from float64
    reference = get_sinusoid_encoding_table(10, 6).numpy()
    np.testing.assert_allclose(table.numpy(), reference, rtol=0, atol=F32_EPS)


def _save_mmaction(path, state, meta=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"meta": meta or {}, "state_dict": state}, path)


def test_videomae_without_pos_embed_uses_the_sinusoid_table(tmp_path):
    source = tiny_videomae()
    state = videomae_to_mmaction_layout(source)
    del state["backbone.pos_embed"]
    state["data_preprocessor.mean"] = torch.zeros(3)  # a key outside the recogniser: ignored
    _save_mmaction(tmp_path / "v.pth", state)
    model, notes = load_videomae(tmp_path / "v.pth")
    assert notes == {"unexpected_keys": ["data_preprocessor.mean"], "pos_embed": "sinusoid"}
    tokens, dim = (16 // 2) * (224 // 32) ** 2, 64
    expected = sinusoid_position_table(tokens, dim)
    torch.testing.assert_close(model.videomae.embeddings.position_embeddings, expected, rtol=0, atol=0)
    torch.testing.assert_close(model.classifier.weight, source.classifier.weight, rtol=0, atol=0)
    # with the table in the file, the file's table is used
    state["backbone.pos_embed"] = torch.randn(1, tokens, dim)
    _save_mmaction(tmp_path / "w.pth", state)
    model, notes = load_videomae(tmp_path / "w.pth")
    assert notes["pos_embed"] == "checkpoint"
    torch.testing.assert_close(
        model.videomae.embeddings.position_embeddings, state["backbone.pos_embed"], rtol=0, atol=0
    )


def test_videomae_missing_learned_weights_are_refused(tmp_path):
    state = videomae_to_mmaction_layout(tiny_videomae())
    del state["backbone.blocks.1.norm2.weight"]
    _save_mmaction(tmp_path / "v.pth", state)
    with pytest.raises(IncompatibleModelError, match="lacks 1 weight"):
        load_videomae(tmp_path / "v.pth")


def _mmengine_module():
    """A stand-in for ``mmengine.logging.history_buffer`` so that pickle writes the reference
    mmengine writes: ``GLOBAL mmengine.logging.history_buffer HistoryBuffer``."""
    module = types.ModuleType("mmengine.logging.history_buffer")

    class HistoryBuffer:
        def __init__(self):
            self._log_history = np.array([0.5, 0.25])
            self._count_history = np.array([1.0, 1.0])
            self.max_length = 1000000

    HistoryBuffer.__module__, HistoryBuffer.__qualname__ = module.__name__, "HistoryBuffer"
    module.HistoryBuffer = HistoryBuffer
    return module


def test_mmengine_metadata_is_allow_listed_not_unpickled(tmp_path, monkeypatch):
    module = _mmengine_module()
    for name in ("mmengine", "mmengine.logging", module.__name__):
        monkeypatch.setitem(sys.modules, name, module if name == module.__name__ else types.ModuleType(name))
    state = videomae_to_mmaction_layout(tiny_videomae())
    meta = {
        "message_hub": {"log_scalars": {"train/loss": module.HistoryBuffer()}},
        "seed": 0,
        "epoch_scalar": np.float64(3.0),
    }
    path = tmp_path / "m.pth"
    _save_mmaction(path, state, meta)
    for name in ("mmengine", "mmengine.logging", module.__name__):
        monkeypatch.delitem(sys.modules, name)
    raw = path.read_bytes()
    assert b"mmengine.logging.history_buffer" in raw and b"HistoryBuffer" in raw
    with pytest.raises(pickle.UnpicklingError, match="HistoryBuffer"):
        torch.load(path, weights_only=True)  # plain weights_only refuses it
    checkpoint = load_checkpoint(path)
    assert isinstance(checkpoint["meta"]["message_hub"]["log_scalars"]["train/loss"], InertMetadata)
    assert isinstance(checkpoint["meta"]["epoch_scalar"], InertMetadata)
    for key, value in state.items():
        torch.testing.assert_close(checkpoint["state_dict"][key], value, rtol=0, atol=0)
    model, _ = load_videomae(path)
    assert model.classifier.weight.shape == (400, 64)


def test_other_globals_are_still_refused(tmp_path, monkeypatch):
    module = types.ModuleType("evil_pkg")

    class Payload:
        pass

    Payload.__module__, Payload.__qualname__ = "evil_pkg", "Payload"
    module.Payload = Payload
    monkeypatch.setitem(sys.modules, "evil_pkg", module)
    torch.save({"meta": {"x": Payload()}, "state_dict": {}}, tmp_path / "e.pth")
    monkeypatch.delitem(sys.modules, "evil_pkg")
    with pytest.raises(pickle.UnpicklingError, match="evil_pkg"):
        load_checkpoint(tmp_path / "e.pth")


def test_compare_notes_runtime_differences():
    from eval_crafter.report import compare_reports

    def report(device, digest):
        runtime = {"device": device, "fp32": False, "dtypes": {"x": "float32"}, "weights": {"w": digest}}
        return {
            "mode": "compat",
            "backend": "full",
            "label": "L",
            "videos": "v",
            "evalcrafter": None,
            "metrics": {"tiny": {"value": 1.0}},
            "runtime": {"tiny": runtime},
        }

    assert "note:" not in compare_reports(report("cpu", "a"), report("cpu", "a"))
    text = compare_reports(report("cpu", "a"), report("cuda:0", "b"))
    assert "note: tiny ran differently: device cpu vs cuda:0; other weights files" in text


def test_docs_models_table_is_what_the_code_loads():
    """docs/evalcrafter.md's models-folder table lists exactly the files the metrics require."""
    import re
    from pathlib import Path

    text = (Path(__file__).resolve().parents[2] / "docs" / "evalcrafter.md").read_text()
    section = text.split("## Models folder (`--models DIR`)")[1].split("\n## ")[0]
    lines = section.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("|---"))  # rows after the header
    rows = [line.split("|") for line in lines[start + 1 :] if line.startswith("| ")]
    documented = {re.search(r"`([^`]+)`", cells[2]).group(1) for cells in rows}
    required = {f.relpath for name in DEFAULT_METRICS for f in METRICS[name].required_files()}
    assert documented == required
