"""Shipped run configs live in the package: `--cfg NAME` finds them from any folder, a local file wins,
and a built wheel carries them (`tsm-video train --cfg vc2_openvid70k.yaml --dry-run` from an empty
folder with only the installed wheel on the path)."""

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tsm_video.config import CONFIG_DIR, ConfigError, load_config, packaged_configs, resolve_config_path

REPO = Path(__file__).resolve().parents[1]


def test_repo_configs_path_is_the_packaged_folder():
    # README and docs say `configs/vc2_openvid70k.yaml`: from the repo root it is the packaged file.
    assert (REPO / "configs" / "vc2_openvid70k.yaml").resolve() == CONFIG_DIR / "vc2_openvid70k.yaml"
    assert {"vc2_openvid70k.yaml", "demo.yaml"} <= set(packaged_configs())


@pytest.mark.parametrize("name", ["vc2_openvid70k.yaml", "vc2_openvid70k", "configs/vc2_openvid70k.yaml"])
def test_bare_name_resolves_to_the_packaged_config(name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # an empty folder: no local file of that name
    assert resolve_config_path(name) == CONFIG_DIR / "vc2_openvid70k.yaml"
    assert load_config(name).run.name == "vc2_openvid70k"


@pytest.mark.parametrize("name", ["vc2_openvid70k.yaml", "vc2_openvid70k"])
def test_local_file_wins(name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "vc2_openvid70k.yaml").write_text("run:\n  name: mine\n")
    assert resolve_config_path(name) == Path("vc2_openvid70k.yaml")
    assert load_config(name).run.name == "mine"


def test_missing_config_names_the_packaged_ones(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    listed = r"not found: nosuch\.yaml .*packaged configs: .*demo\.yaml.*vc2_openvid70k"
    with pytest.raises(ConfigError, match=listed):
        load_config("nosuch.yaml")
    # A path with a folder is never looked up in the package.
    with pytest.raises(ConfigError, match="config file not found"):
        load_config("elsewhere/vc2_openvid70k.yaml")


def test_relative_paths_in_a_config_resolve_against_the_working_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = load_config("vc2_openvid70k")  # a packaged file: its data paths are the user's, not the package's
    assert cfg.data.csv == "data/openvid70k/openvid70k.csv"
    assert cfg.run_dir == Path("runs/vc2_openvid70k")


@pytest.mark.slow
def test_built_wheel_carries_the_configs_and_runs_the_dry_run(tmp_path):
    src = tmp_path / "src"  # build from a copy so the checkout gets no build/ or egg-info
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, src / name)
    for pkg in ("tsm_video", "eval_crafter", "data_tools"):
        shutil.copytree(REPO / pkg, src / pkg, ignore=shutil.ignore_patterns("__pycache__"))
    wheels = tmp_path / "wheels"
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run(
        [*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(wheels), str(src)],
        check=True,
        cwd=tmp_path,
    )
    (wheel,) = wheels.glob("*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {"tsm_video/configs/vc2_openvid70k.yaml", "tsm_video/configs/demo.yaml"} <= names
    target = tmp_path / "site"
    subprocess.run([*pip, "install", "--no-deps", "--target", str(target), str(wheel)], check=True)

    empty = tmp_path / "empty"
    empty.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"} | {"PYTHONPATH": str(target)}
    run = subprocess.run(
        [sys.executable, "-m", "tsm_video.cli", "train", "--cfg", "vc2_openvid70k.yaml", "--dry-run"],
        cwd=empty,
        env=env,
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0, run.stderr
    assert "foster_s8" in run.stdout and "assemble" in run.stdout
    assert "model.checkpoint: checkpoints/vc2/model.ckpt" in run.stdout  # relative to the cwd
    assert list(empty.iterdir()) == []  # a dry run writes nothing
