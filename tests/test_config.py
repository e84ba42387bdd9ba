"""Run configs: every shipped YAML loads; bad keys and values give messages naming the key and the fix."""

from pathlib import Path

import pytest
import yaml

from tsm_video.config import ConfigError, RunConfig, load_config, missing_paths, parse_config, save_config

CONFIGS = sorted((Path(__file__).parents[1] / "configs").glob("*.yaml"))


def test_configs_exist():
    names = {p.name for p in CONFIGS}
    assert {"vc2_openvid70k.yaml", "demo.yaml"} <= names


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_every_config_loads_and_round_trips(path, tmp_path):
    cfg = load_config(path)
    assert isinstance(cfg, RunConfig)
    saved = save_config(cfg, tmp_path / "config.yaml")
    assert load_config(saved) == cfg


def test_recipe_values():
    cfg = load_config(Path(__file__).parents[1] / "configs" / "vc2_openvid70k.yaml")
    assert cfg.model.backbone == "vc2"
    assert cfg.tsm.targets == "vc2" and cfg.tsm.text_lora.enabled and cfg.tsm.text_lora.targets == "vc2-text"
    assert cfg.train.lr == 2e-4 and cfg.train.weight_decay == 1e-2
    assert cfg.train.global_batch_size == 32
    assert cfg.train.steps.foster == 5000 and cfg.train.steps.assemble == 5000
    assert (cfg.data.num_frames, cfg.data.height, cfg.data.width) == (16, 320, 512)
    assert cfg.model.mixed_precision == "bf16" and cfg.model.gradient_checkpointing
    assert cfg.tsm.core_scale == cfg.tsm.scales[0]


def test_overrides_are_yaml_scalars_and_lists():
    cfg = parse_config(
        {},
        [
            "tsm.scales=[16, 8]",
            "train.lr=1e-4",
            "model.checkpoint=null",
            "model.mixed_precision=no",
            "run.name=x",
            "data.videos=[a.zip, b.zip]",
        ],
    )
    assert cfg.tsm.scales == [16, 8]
    assert cfg.train.lr == pytest.approx(1e-4)
    assert cfg.model.checkpoint is None
    assert cfg.model.mixed_precision == "no"
    assert cfg.data.videos == ["a.zip", "b.zip"]


def test_overrides_do_not_mutate_the_input():
    raw = {"train": {"lr": 0.5}}
    parse_config(raw, ["train.lr=0.1"])
    assert raw == {"train": {"lr": 0.5}}


@pytest.mark.parametrize(
    ("override", "needles"),
    [
        ("trian.lr=1", ["`trian`", "did you mean 'train'"]),
        ("train.lrr=1", ["`train.lrr`", "did you mean 'lr'", "valid keys of train"]),
        ("tsm.scale=[4]", ["`tsm.scale`", "did you mean 'scales'"]),
        ("tsm.scales=[]", ["`tsm.scales`", "at least one"]),
        (
            "tsm.scales=[2, 8, 4]",
            ["`tsm.scales`", "[2, 8, 4]", "strictly decreasing", "did you mean [8, 4, 2]"],
        ),
        ("tsm.scales=[8, 4, 4]", ["`tsm.scales`", "must not repeat", "[8, 4]"]),
        ("tsm.scales=[4, 0]", ["`tsm.scales`", "positive"]),
        ("tsm.scales=[a]", ["`tsm.scales[0]`", "integer"]),
        ("tsm.rank=0", ["`tsm.rank`", "got 0", "positive"]),
        ("tsm.rank=-2", ["`tsm.rank`", "positive"]),
        ("tsm.text_lora.rank=0", ["`tsm.text_lora.rank`"]),
        ("tsm.gate_activation=softmx", ["`tsm.gate_activation`", "did you mean 'softmax'"]),
        ("train.stages=[foster, asemble]", ["`train.stages`", "did you mean 'assemble'"]),
        ("train.stages=[assemble, foster]", ["`train.stages`", "order"]),
        ("train.per_device_batch_size=3", ["`train.global_batch_size`", "per_device_batch_size=3"]),
        ("data.caption_dropout=1.5", ["`data.caption_dropout`", "[0, 1]"]),
        ("data.height=100", ["`data.height`", "multiple of 8"]),
        ("model.mixed_precision=bf17", ["`model.mixed_precision`", "did you mean 'bf16'"]),
        ("model.backbone=vc3", ["`model.backbone`", "vc2"]),
        ("train.lr=fast", ["`train.lr`", "number"]),
        ("model.gradient_checkpointing=1", ["`model.gradient_checkpointing`", "true or false"]),
        ("train.validation.every=-1", ["`train.validation.every`"]),
        ("lr", ["key.sub=value"]),
        ("generate.steps=3", ["`generate.steps`", "reaches 1000"]),
        ("train.validation.steps=0", ["`train.validation.steps`"]),
    ],
)
def test_bad_values_name_key_and_fix(override, needles):
    with pytest.raises(ConfigError) as e:
        parse_config({}, [override])
    for n in needles:
        assert n in str(e.value), (n, str(e.value))


def test_assemble_needs_two_scales():
    with pytest.raises(ConfigError, match="at least two scales"):
        parse_config({}, ["tsm.scales=[4]"])
    assert parse_config({}, ["tsm.scales=[4]", "train.stages=[foster]"]).tsm.scales == [4]


def test_batch_arithmetic_with_processes():
    cfg = parse_config({}, ["train.global_batch_size=32", "train.per_device_batch_size=2"])
    assert cfg.train.gradient_accumulation(1) == 16
    assert cfg.train.gradient_accumulation(8) == 2
    with pytest.raises(ConfigError, match=r"2 x 3 = 6"):
        cfg.train.gradient_accumulation(3)


def test_file_errors(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"tsm": {"ranks": 4}}))
    with pytest.raises(ConfigError, match=r"bad\.yaml.*`tsm\.ranks`.*did you mean 'rank'"):
        load_config(bad)
    bad.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(bad)


def test_missing_paths_listed(tmp_path):
    cfg = parse_config(
        {
            "model": {"checkpoint": str(tmp_path / "model.ckpt")},
            "data": {"csv": str(tmp_path / "x.csv"), "videos": [str(tmp_path / "p0.zip")]},
        }
    )
    missing = missing_paths(cfg)
    assert any(m.startswith("model.checkpoint") for m in missing)
    assert any(m.startswith("data.csv") for m in missing)
    assert any("p0.zip" in m for m in missing)
    (tmp_path / "model.ckpt").touch()
    (tmp_path / "x.csv").touch()
    (tmp_path / "p0.zip").touch()
    assert missing_paths(cfg) == []
    cache = parse_config({"data": {"source": "cache"}})
    assert missing_paths(cache) == ["data.cache_dir: not set (needed with data.source=cache)"]
