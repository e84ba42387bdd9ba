"""Typed, validated run configs: YAML in, dataclasses out, clear errors.

A run config has six sections (``run``, ``model``, ``tsm``, ``data``, ``train``, ``generate``).
Every key is a dataclass field; an unknown key is an error with a "did you mean"; every
value is type-checked and range-checked where it is read, and every message names the
dotted key, the value given and what is valid. ``key.sub=value`` overrides are parsed as
YAML scalars or lists (``tsm.scales=[8,4]``, ``train.lr=1e-4``, ``model.checkpoint=null``).
Names pick from fixed registries (backbones, presets, stages); nothing imports by string.

Where a config comes from: ``load_config(name)`` reads a local file when one exists at ``name``
(or ``name.yaml``), else a config shipped inside the package (``tsm_video/configs/``, also
reachable as ``configs/`` in a checkout), so ``tsm-video train --cfg vc2_openvid70k`` works from
any folder. Relative paths *inside* a config (``model.checkpoint``, ``data.csv``, ``data.videos``,
``data.cache_dir``, ``run.output_dir``) and in overrides always resolve against the current
working directory, never against the YAML's own folder: a packaged config and a local copy of it
read the same files.

>>> cfg = load_config("configs/demo.yaml", overrides=["train.steps.foster=10"])
>>> cfg.tsm.scales
[4, 1]
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from tsm_video.errors import TSMVideoError
from tsm_video.fileio import atomic_write_text

__all__ = [
    "BASE_FILE",
    "CONFIG_DIR",
    "ConfigError",
    "RunConfig",
    "RunSection",
    "ModelConfig",
    "TextLoraConfig",
    "TSMConfig",
    "DataConfig",
    "StageSteps",
    "ValidationConfig",
    "TrainConfig",
    "GenerateConfig",
    "STAGES",
    "load_config",
    "packaged_configs",
    "parse_config",
    "resolve_config_path",
    "save_config",
    "config_to_dict",
    "missing_paths",
]

CONFIG_DIR = Path(__file__).resolve().parent / "configs"
"""The run configs shipped inside the package (``vc2_openvid70k.yaml``, ``demo.yaml``)."""

BASE_FILE = "model.safetensors"  # the demo-only `base` stage writes the full denoiser here

STAGES = ("base", "lora", "foster", "assemble")
"""Stage names: ``base`` trains the whole denoiser (the demo's own base model), ``lora`` is
fostering at scale 1 (vanilla LoRA), ``foster`` is TSM stage 1 for each configured scale,
``assemble`` is TSM stage 2 (experts frozen, router trained)."""


class ConfigError(TSMVideoError, ValueError):
    """An invalid config: the message names the key, the value given and what is valid.

    ``key`` is the dotted key at fault (``None`` when the config as a whole is), so the error is
    blamed on the override that set it rather than on the YAML file.
    """

    def __init__(self, message: str, key: str | None = None, blamed: bool = False) -> None:
        super().__init__(message)
        self.key = key
        self.blamed = blamed  # the message already names its source (an override or the file)


def _fail(key: str, given: Any, valid: str) -> ConfigError:
    return ConfigError(f"config key `{key}`: got {given!r}; {valid}", key=key)


def _backbone_names() -> list[str]:
    from tsm_video.models import BACKBONES

    return sorted(BACKBONES)


def _spatial_multiple(backbone: str) -> int:
    """Pixel sizes of ``backbone`` must be multiples of this (the rule generation checks too)."""
    from tsm_video.models import BACKBONES

    return BACKBONES[backbone].pixel_multiple


def _preset_names() -> list[str]:
    from tsm_video.tsm import PRESETS

    return sorted(PRESETS)


def _check_targets(key: str, targets: str | list[str]) -> None:
    """A preset name from ``tsm_video.tsm.PRESETS`` or a non-empty list of name suffixes."""
    if isinstance(targets, list):
        if not targets or not all(isinstance(t, str) and t for t in targets):
            raise _fail(key, targets, "a preset name or a non-empty list of module-name suffixes")
        return
    presets = _preset_names()
    if targets not in presets:
        raise _fail(key, targets, f"valid presets: {presets}{_did_you_mean(targets, presets)}")


def _check_ddim_steps(key: str, steps: int, num_timesteps: int = 1000) -> None:
    """VC2's DDIM grid ``range(0, T, T // S) + 1`` must stay below ``T`` (e.g. S = 3 reaches 1000)."""
    if steps <= 0 or steps > num_timesteps:
        raise _fail(key, steps, f"DDIM steps must be in [1, {num_timesteps}]")
    last = range(0, num_timesteps, num_timesteps // steps)[-1] + 1
    if last >= num_timesteps:
        ok = [n for n in (10, 20, 25, 50, 100) if n != steps]
        raise _fail(
            key,
            steps,
            f"the DDIM grid range(0, {num_timesteps}, {num_timesteps // steps}) + 1 reaches "
            f"{last} >= T; use a step count such as {ok}",
        )


def _did_you_mean(word: str, choices: list[str] | tuple[str, ...]) -> str:
    close = difflib.get_close_matches(str(word), list(choices), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


# --------------------------------------------------------------------------------------
# Sections. Each field is documented under it; `_validate(prefix)` range-checks values.
# --------------------------------------------------------------------------------------


@dataclass
class RunSection:
    name: str = "run"
    """Run name; outputs go to ``<output_dir>/<name>/<stage dir>/``."""
    output_dir: str = "runs"
    seed: int = 0
    """Seeds the model init (random-init backbones), data order, timesteps, noise, caption dropout."""

    def _validate(self, p: str) -> None:
        if not self.name or "/" in self.name:
            raise _fail(f"{p}.name", self.name, "a non-empty name without '/'")


@dataclass
class ModelConfig:
    backbone: str = "vc2"
    """Registry name (``tsm_video.models.BACKBONES``): ``vc2`` (the real 512 model) or ``vc2-tiny``."""
    checkpoint: str | None = None
    """Base weights (official ``model.ckpt`` or safetensors); null = random init (tiny models only)."""
    mixed_precision: Literal["no", "fp16", "bf16"] = "bf16"
    """Passed to accelerate; on a CPU-only machine bf16/fp16 fall back to ``no``."""
    gradient_checkpointing: bool = True
    attention: Literal["auto", "sdpa", "math"] = "auto"

    def _validate(self, p: str) -> None:
        names = _backbone_names()
        if self.backbone not in names:
            raise _fail(
                f"{p}.backbone",
                self.backbone,
                f"valid backbones: {names}{_did_you_mean(self.backbone, names)}",
            )


@dataclass
class TextLoraConfig:
    enabled: bool = False
    """Vanilla LoRA on the text encoder (``targets``), trained in every stage-1 run (lora/foster).
    Stage 2 loads the text LoRA of the core (finest) scale's run and keeps it frozen."""
    rank: int = 4
    alpha: float | None = None
    """LoRA alpha; null = rank (scaling 1)."""
    targets: str | list[str] = "vc2-text"
    lr: float | None = None
    """Learning rate of the text LoRA; null = ``train.lr`` (SD3 in App. A.1: 5e-6 vs 1e-5)."""
    weight_decay: float | None = None
    """Weight decay of the text LoRA; null = ``train.weight_decay`` (SD3: 1e-3 vs 1e-4)."""

    def _validate(self, p: str) -> None:
        if self.rank <= 0:
            raise _fail(f"{p}.rank", self.rank, "the LoRA rank must be a positive integer")
        if self.alpha is not None and self.alpha <= 0:
            raise _fail(f"{p}.alpha", self.alpha, "alpha must be > 0 (or null for alpha = rank)")
        if self.lr is not None and self.lr <= 0:
            raise _fail(f"{p}.lr", self.lr, "must be > 0 (or null for train.lr)")
        if self.weight_decay is not None and self.weight_decay < 0:
            raise _fail(f"{p}.weight_decay", self.weight_decay, "must be >= 0 (null: train.weight_decay)")
        _check_targets(f"{p}.targets", self.targets)


@dataclass
class TSMConfig:
    scales: list[int] = field(default_factory=lambda: [8, 1])
    """Interval counts, strictly decreasing; the first (finest) is the core expert in stage 2.
    ``1`` is vanilla LoRA (one expert over all of [0, T))."""
    rank: int = 4
    alpha: float | None = None
    """LoRA alpha; null = rank (scaling 1)."""
    targets: str | list[str] = "vc2"
    """A preset of ``tsm_video.tsm.PRESETS`` or a list of module-name suffixes."""
    text_lora: TextLoraConfig = field(default_factory=TextLoraConfig)
    gate_activation: Literal["none", "softmax", "sigmoid"] = "none"
    router: Literal["asymmetric", "symmetric"] = "asymmetric"
    """``asymmetric`` = TSM (core un-gated); ``symmetric`` = every expert gated (MoE ablation)."""
    router_input: Literal["both", "x", "t"] = "both"
    """What the stage-2 router reads: ``both`` = ``FC(x) + Emb(t)`` (TSM, Sec. 3.3); ``x`` / ``t``
    = the router-input ablation of Sec. 4.4 (the other term stays frozen at its zero init)."""
    num_timesteps: int = 1000

    def _validate(self, p: str) -> None:
        s = self.scales
        if not s:
            raise _fail(f"{p}.scales", s, "give at least one interval count, e.g. [8, 4, 2, 1]")
        if any(n <= 0 for n in s):
            raise _fail(f"{p}.scales", s, "every interval count must be a positive integer")
        if len(set(s)) != len(s):
            raise _fail(
                f"{p}.scales", s, f"scales must not repeat; did you mean {sorted(set(s), reverse=True)}?"
            )
        if s != sorted(s, reverse=True):
            raise _fail(
                f"{p}.scales",
                s,
                f"scales must be strictly decreasing (finest = core first); "
                f"did you mean {sorted(s, reverse=True)}?",
            )
        if max(s) > self.num_timesteps:
            raise _fail(
                f"{p}.scales", s, f"an interval count cannot exceed num_timesteps={self.num_timesteps}"
            )
        if self.rank <= 0:
            raise _fail(f"{p}.rank", self.rank, "the LoRA rank must be a positive integer")
        if self.alpha is not None and self.alpha <= 0:
            raise _fail(f"{p}.alpha", self.alpha, "alpha must be > 0 (or null for alpha = rank)")
        if self.num_timesteps <= 0:
            raise _fail(f"{p}.num_timesteps", self.num_timesteps, "must be a positive integer")
        _check_targets(f"{p}.targets", self.targets)
        self.text_lora._validate(f"{p}.text_lora")

    @property
    def core_scale(self) -> int:
        """The finest scale: the un-gated core expert of stage 2."""
        return self.scales[0]


@dataclass
class DataConfig:
    source: Literal["videos", "cache", "images"] = "videos"
    """``videos``: decode clips from ``csv`` + ``videos``; ``cache``: latents/text in ``cache_dir``;
    ``images``: image–caption pairs from ``images`` (image backbones)."""
    images: str | list[str] | None = None
    """Image data (``source: images``): a folder with ``metadata.jsonl`` (``file_name``, ``text``),
    a CSV (``path_column``, ``caption_column``), or webdataset shards (a folder of ``.tar`` files
    or a list of them: ``<key>.jpg|png`` + ``<key>.txt``)."""
    crop: Literal["center", "random"] = "center"
    """Images: resize the short side to the target, then crop ``height`` × ``width`` (center or random)."""
    csv: str | None = None
    """OpenVid-format CSV (columns ``video``, ``caption``)."""
    videos: str | list[str] | None = None
    """A folder of videos, or a list of OpenVid zip parts."""
    cache_dir: str | None = None
    num_frames: int = 16
    frame_stride: int | None = None
    """Fixed stride between sampled frames; null with ``target_fps`` null = consecutive frames
    (fps conditioning = the video's own fps, close to the fps 28 VC2 samples with)."""
    target_fps: float | None = None
    height: int = 320
    width: int = 512
    caption_dropout: float = 0.2
    """Probability of replacing a caption by the empty prompt "" (classifier-free guidance); 0.2 is
    the LVDM/VideoCrafter training default (``uncond_prob=0.2``, ``uncond_type="empty_seq"``)."""
    num_workers: int = 2
    path_column: str = "video"
    caption_column: str = "caption"

    def _validate(self, p: str) -> None:
        if self.num_frames <= 0:
            raise _fail(f"{p}.num_frames", self.num_frames, "must be a positive integer")
        for key in ("height", "width"):
            v = getattr(self, key)
            if v <= 0 or v % 8:
                raise _fail(f"{p}.{key}", v, "must be a positive multiple of 8 (the VAE downsamples by 8)")
        if self.frame_stride is not None and self.frame_stride <= 0:
            raise _fail(f"{p}.frame_stride", self.frame_stride, "a positive integer or null")
        if self.target_fps is not None and self.target_fps <= 0:
            raise _fail(f"{p}.target_fps", self.target_fps, "a positive number or null")
        if self.frame_stride is not None and self.target_fps is not None:
            raise _fail(f"{p}.target_fps", self.target_fps, "set frame_stride or target_fps, not both")
        if not 0.0 <= self.caption_dropout <= 1.0:
            raise _fail(f"{p}.caption_dropout", self.caption_dropout, "a probability in [0, 1]")
        if self.num_workers < 0:
            raise _fail(f"{p}.num_workers", self.num_workers, "must be >= 0")


@dataclass
class StageSteps:
    base: int = 0
    """Full-parameter steps of the ``base`` stage (the demo trains its own tiny base model)."""
    foster: int = 5000
    """Optimizer steps of each stage-1 run: per expert (``per_expert``) or per scale (``joint``)."""
    assemble: int = 5000

    def _validate(self, p: str) -> None:
        for key in ("base", "foster", "assemble"):
            if getattr(self, key) < 0:
                raise _fail(f"{p}.{key}", getattr(self, key), "must be >= 0")


@dataclass
class ValidationConfig:
    every: int = 1000
    """Write validation clips every N optimizer steps (and at the end); 0 = never."""
    prompts: list[str] = field(default_factory=lambda: ["a corgi running on the beach, sunset"])
    steps: int = 25
    """DDIM steps of the validation sampler."""
    guidance_scale: float = 12.0
    seed: int = 0

    def _validate(self, p: str) -> None:
        if self.every < 0:
            raise _fail(f"{p}.every", self.every, "must be >= 0 (0 = off)")
        if self.every and not self.prompts:
            raise _fail(f"{p}.prompts", self.prompts, "give at least one prompt, or set every: 0")
        _check_ddim_steps(f"{p}.steps", self.steps)


@dataclass
class TrainConfig:
    stages: list[str] = field(default_factory=lambda: ["foster", "assemble"])
    """Stages run in order by ``tsm-video train``; ``foster`` runs once per scale."""
    steps: StageSteps = field(default_factory=StageSteps)
    lr: float = 2e-4
    base_lr: float = 1e-4
    """Learning rate of the full-parameter ``base`` stage."""
    weight_decay: float = 1e-2
    adam_betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    max_grad_norm: float = 1.0
    """Gradient clipping (0 = off)."""
    warmup_steps: int = 0
    lr_schedule: Literal["constant", "cosine"] = "constant"
    """After the linear warmup: ``constant``, or ``cosine`` decay to 0 at the stage's last step."""
    loss_weighting: Literal["none", "v", "min_snr", "x0_clip"] = "none"
    """Per-timestep weight w(t) on the per-sample loss (``tsm_video.train.weighting``; normalised
    to mean 1 over t): ``none`` (the backbone's own loss), ``v`` (1 + 1/SNR: the v-MSE on an
    ε-model, weight on high t), ``min_snr`` (min(SNR, γ)/SNR, Min-SNR-γ of Hang et al. 2023,
    "Efficient Diffusion Training via Min-SNR Weighting Strategy"), ``x0_clip`` (min(1/SNR, γ)).
    Needs a backbone with a discrete noise schedule (not SD3's flow matching)."""
    loss_weighting_gamma: float = 5.0
    """γ of ``min_snr`` / ``x0_clip`` (Hang et al.: 5)."""
    global_batch_size: int = 32
    """= per_device_batch_size x gradient accumulation x processes (accumulation is derived)."""
    per_device_batch_size: int = 1
    foster_schedule: Literal["per_expert", "joint"] = "per_expert"
    """How stage 1 spends its budget (docs/training.md, paper Tab. 8). ``per_expert`` (the paper's):
    each expert of a scale is its own run of ``steps.foster`` optimizer steps at
    ``global_batch_size``, every sample from its interval (``foster_s<n>_i<i>/``; independent jobs
    with ``--scale n --interval i``), assembled into the scale's adapter once all are present.
    ``joint`` (n times cheaper): one run of ``steps.foster`` steps trains the scale's n experts
    together, each global batch split exactly equally over the intervals."""
    foster_sampling: Literal["stratified", "uniform"] = "stratified"
    """Timesteps of a ``joint`` run: stratified (every interval its exact share of every global
    batch) or uniform over [0, T)."""
    checkpoint_every: int = 500
    keep_last: int = 2
    log_every: int = 10
    log_with: Literal["tensorboard", "wandb", "comet_ml", "mlflow", "aim", "clearml", "dvclive", "none"] = (
        "tensorboard"
    )
    """The accelerate tracker of the loss curves (under ``<run dir>/logs``); ``none`` = log lines only.
    A tracker other than tensorboard needs its package installed (e.g. ``pip install wandb``)."""
    validation: ValidationConfig = field(default_factory=ValidationConfig)

    def _validate(self, p: str) -> None:
        if not self.stages:
            raise _fail(f"{p}.stages", self.stages, f"give at least one of {list(STAGES)}")
        for s in self.stages:
            if s not in STAGES:
                raise _fail(f"{p}.stages", s, f"valid stages: {list(STAGES)}{_did_you_mean(s, STAGES)}")
        if len(set(self.stages)) != len(self.stages):
            raise _fail(f"{p}.stages", self.stages, "each stage at most once")
        order = [s for s in STAGES if s in self.stages]
        if self.stages != order:
            raise _fail(f"{p}.stages", self.stages, f"stages run in the order {order}")
        self.steps._validate(f"{p}.steps")
        for key in ("lr", "base_lr"):
            if getattr(self, key) <= 0:
                raise _fail(f"{p}.{key}", getattr(self, key), "must be > 0")
        if self.weight_decay < 0:
            raise _fail(f"{p}.weight_decay", self.weight_decay, "must be >= 0")
        if len(self.adam_betas) != 2 or not all(0 <= b < 1 for b in self.adam_betas):
            raise _fail(f"{p}.adam_betas", self.adam_betas, "two numbers in [0, 1)")
        if self.max_grad_norm < 0:
            raise _fail(f"{p}.max_grad_norm", self.max_grad_norm, "must be >= 0 (0 = no clipping)")
        positive = (
            "global_batch_size",
            "per_device_batch_size",
            "checkpoint_every",
            "keep_last",
            "log_every",
        )
        for key in positive:
            if getattr(self, key) <= 0:
                raise _fail(f"{p}.{key}", getattr(self, key), "must be a positive integer")
        if self.global_batch_size % self.per_device_batch_size:
            raise _fail(
                f"{p}.global_batch_size",
                self.global_batch_size,
                f"must be divisible by per_device_batch_size={self.per_device_batch_size}",
            )
        if self.warmup_steps < 0:
            raise _fail(f"{p}.warmup_steps", self.warmup_steps, "must be >= 0")
        if not self.loss_weighting_gamma > 0:
            raise _fail(f"{p}.loss_weighting_gamma", self.loss_weighting_gamma, "must be > 0")
        self.validation._validate(f"{p}.validation")

    def gradient_accumulation(self, num_processes: int) -> int:
        """Accumulation steps so that per-device batch x accumulation x processes = global batch."""
        per_step = self.per_device_batch_size * num_processes
        if self.global_batch_size % per_step:
            raise _fail(
                "train.global_batch_size",
                self.global_batch_size,
                f"must be divisible by per_device_batch_size x processes = "
                f"{self.per_device_batch_size} x {num_processes} = {per_step}",
            )
        return self.global_batch_size // per_step


@dataclass
class GenerateConfig:
    height: int = 320
    width: int = 512
    num_frames: int = 16
    steps: int = 50
    eta: float = 1.0
    guidance_scale: float = 12.0
    fps: int = 28
    seed: int = 123
    batch_size: int = 1
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"
    """Arithmetic of the sampler (UNet, text encoder, VAE decode): ``fp32`` as VideoCrafter2's own
    inference script; ``bf16``/``fp16`` (autocast) are faster opt-ins whose error the guidance
    scale multiplies (benchmarks/RESULTS.md). Independent of ``model.mixed_precision`` (training)."""

    def _validate(self, p: str) -> None:
        for key in ("height", "width"):
            v = getattr(self, key)
            if v <= 0 or v % 8:
                raise _fail(f"{p}.{key}", v, "must be a positive multiple of 8 (the VAE downsamples by 8)")
        _check_ddim_steps(f"{p}.steps", self.steps)
        for key in ("num_frames", "fps", "batch_size"):
            if getattr(self, key) <= 0:
                raise _fail(f"{p}.{key}", getattr(self, key), "must be a positive integer")
        if self.eta < 0:
            raise _fail(f"{p}.eta", self.eta, "must be >= 0")


@dataclass
class RunConfig:
    run: RunSection = field(default_factory=RunSection)
    model: ModelConfig = field(default_factory=ModelConfig)
    tsm: TSMConfig = field(default_factory=TSMConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    generate: GenerateConfig = field(default_factory=GenerateConfig)

    def _validate(self, p: str = "") -> None:
        for f in dataclasses.fields(self):
            getattr(self, f.name)._validate(f.name)
        if "assemble" in self.train.stages and len(self.tsm.scales) < 2:
            raise _fail(
                "tsm.scales",
                self.tsm.scales,
                "stage `assemble` needs at least two scales (a core and a context scale)",
            )
        multiple = _spatial_multiple(self.model.backbone)
        for key in ("data.height", "data.width", "generate.height", "generate.width"):
            section, field_name = key.split(".")
            v = getattr(getattr(self, section), field_name)
            if v % multiple:
                raise _fail(
                    key,
                    v,
                    f"must be a multiple of {multiple} for backbone `{self.model.backbone}` (VAE × UNet "
                    f"downsampling); try {max(multiple, round(v / multiple) * multiple)}",
                )

    @property
    def run_dir(self) -> Path:
        return Path(self.run.output_dir) / self.run.name

    def base_weights(self) -> Path | None:
        """The base model every TSM stage (and generation) starts from: the run's own ``base``
        stage output when ``train.stages`` has ``base``, else ``model.checkpoint`` (None = seeded
        random init)."""
        if "base" in self.train.stages:
            return self.run_dir / "base" / BASE_FILE
        return None if self.model.checkpoint is None else Path(self.model.checkpoint)


# --------------------------------------------------------------------------------------
# dict -> dataclass conversion with key paths.
# --------------------------------------------------------------------------------------


def _type_name(tp: Any) -> str:
    if typing.get_origin(tp) is Literal:
        return " | ".join(repr(a) for a in typing.get_args(tp))
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        return " | ".join(_type_name(a) for a in typing.get_args(tp))
    if typing.get_origin(tp) is list:
        return f"list of {_type_name(typing.get_args(tp)[0])}"
    return "null" if tp is type(None) else getattr(tp, "__name__", str(tp))


def _convert(tp: Any, value: Any, key: str) -> Any:
    """Check ``value`` against the annotation ``tp``; ints are accepted where floats are."""
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise _fail(key, value, f"a mapping (section `{key}`)")
        return _build(tp, value, key)
    if origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(tp):
            try:
                return _convert(arg, value, key)
            except ConfigError:
                continue
        raise _fail(key, value, f"expected {_type_name(tp)}")
    if origin is Literal:
        choices = typing.get_args(tp)
        if value is False and "no" in choices:  # YAML 1.1 reads a bare `no` as false
            value = "no"
        if value not in choices:
            raise _fail(key, value, f"valid values: {list(choices)}{_did_you_mean(value, choices)}")
        return value
    if origin is list:
        if not isinstance(value, list):
            raise _fail(key, value, f"expected {_type_name(tp)}")
        (item,) = typing.get_args(tp)
        return [_convert(item, v, f"{key}[{i}]") for i, v in enumerate(value)]
    if tp is type(None):
        if value is not None:
            raise _fail(key, value, "expected null")
        return None
    if tp is bool:
        if not isinstance(value, bool):
            raise _fail(key, value, "expected true or false")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise _fail(key, value, "expected an integer")
        return value
    if tp is float:
        if isinstance(value, str):  # PyYAML (YAML 1.1) reads `1e-4` (no dot) as a string
            try:
                value = float(value)
            except ValueError:
                raise _fail(key, value, "expected a number") from None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise _fail(key, value, "expected a number")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise _fail(key, value, "expected a string")
        return value
    raise TypeError(f"unsupported config annotation {tp!r} at {key}")


def _build(cls: type, data: dict, prefix: str) -> Any:
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for k, v in data.items():
        key = f"{prefix}.{k}" if prefix else str(k)
        if k not in names:
            raise ConfigError(
                f"unknown config key `{key}`{_did_you_mean(k, names)}; "
                f"valid keys{' of ' + prefix if prefix else ''}: {names}",
                key=key,
            )
        kwargs[k] = _convert(hints[k], v, key)
    return cls(**kwargs)


def _apply_override(raw: dict, override: str) -> None:
    def fail(problem: str) -> ConfigError:
        return ConfigError(f"override {override!r}: {problem}", blamed=True)

    if "=" not in override:
        raise fail("expected key.sub=value (e.g. train.lr=1e-4)")
    dotted, text = override.split("=", 1)
    parts = dotted.strip().split(".")
    try:
        value = yaml.safe_load(text) if text.strip() else ""
    except yaml.YAMLError as e:
        raise fail(f"the value is not valid YAML ({' '.join(str(e).split())})") from None
    node = raw
    for i, part in enumerate(parts[:-1]):
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise fail(f"`{'.'.join(parts[: i + 1])}` is not a section")
        node = child
    node[parts[-1]] = value


def _override_of(key: str | None, overrides: list[str] | tuple[str, ...]) -> str | None:
    """The last override that set ``key`` (or a section above it), else ``None``."""
    if key is None:
        return None
    for override in reversed(overrides):
        dotted = override.split("=", 1)[0].strip()
        if key == dotted or key.startswith((dotted + ".", dotted + "[")):
            return override
    return None


def parse_config(raw: dict | None, overrides: list[str] | tuple[str, ...] = ()) -> RunConfig:
    """Build and validate a :class:`RunConfig` from a plain dict (+ ``key.sub=value`` overrides)."""
    if raw is not None and not isinstance(raw, dict):
        raise ConfigError(f"a config must be a mapping of sections, got {type(raw).__name__}")
    raw = copy.deepcopy(raw or {})
    for o in overrides:
        _apply_override(raw, o)
    try:
        cfg = _build(RunConfig, raw, "")
        cfg._validate()
    except ConfigError as e:
        override = _override_of(e.key, overrides)
        if override is None:
            raise
        raise ConfigError(f"override {override!r}: {e}", key=e.key, blamed=True) from None
    return cfg


def packaged_configs() -> list[str]:
    """Names of the run configs shipped in :data:`CONFIG_DIR` (e.g. ``["demo.yaml", ...]``)."""
    return sorted(p.name for p in CONFIG_DIR.glob("*.yaml"))


def resolve_config_path(name: str | os.PathLike) -> Path:
    """The file ``--cfg name`` means: a local file first (``name``, then ``name.yaml``), else, for
    a bare name or ``configs/<name>`` (the repository's path, so README commands work from any
    folder), the packaged config of that name (raises :class:`ConfigError`)."""
    path = Path(name)
    candidates = [path] if path.suffix in (".yaml", ".yml") else [path, path.with_name(path.name + ".yaml")]
    for c in candidates:
        if c.is_file():
            return c
    if path.parent in (Path("."), Path("configs")):
        for c in candidates:
            if (CONFIG_DIR / c.name).is_file():
                return CONFIG_DIR / c.name
    raise ConfigError(
        f"config file not found: {path} (neither a local file nor a packaged config; "
        f"packaged configs: {', '.join(packaged_configs())})"
    )


def load_config(path: str | os.PathLike, overrides: list[str] | tuple[str, ...] = ()) -> RunConfig:
    """Read a YAML run config (a local path or a packaged config's name, see
    :func:`resolve_config_path`), apply ``key.sub=value`` overrides, validate (raises
    :class:`ConfigError`)."""
    path = resolve_config_path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML ({e})") from None
    if raw is not None and not isinstance(raw, dict):
        raise ConfigError(f"{path}: a config must be a mapping of sections, got {type(raw).__name__}")
    try:
        return parse_config(raw, overrides)
    except ConfigError as e:
        if e.blamed:  # an override's fault: the file is fine
            raise
        raise ConfigError(f"{path}: {e}", key=e.key, blamed=True) from None


def config_to_dict(cfg: RunConfig) -> dict:
    return dataclasses.asdict(cfg)


def save_config(cfg: RunConfig, path: str | os.PathLike) -> Path:
    """Write the resolved config as YAML, atomically (temp file + rename); it reloads to an equal config."""
    return atomic_write_text(path, yaml.safe_dump(config_to_dict(cfg), sort_keys=False))


def missing_paths(cfg: RunConfig) -> list[str]:
    """Input files a training run needs that do not exist, each as ``key: path`` (empty = all present)."""
    missing = []
    if cfg.model.checkpoint is not None and not Path(cfg.model.checkpoint).exists():
        from tsm_video.models.registry import weights_hint

        missing.append(f"model.checkpoint: {cfg.model.checkpoint} ({weights_hint(cfg.model.backbone)})")
    d = cfg.data
    if d.source == "videos":
        if d.csv is None:
            missing.append("data.csv: not set (an OpenVid-format CSV is needed with data.source=videos)")
        elif not Path(d.csv).is_file():
            missing.append(f"data.csv: {d.csv}")
        if d.videos is None:
            missing.append("data.videos: not set (a video folder or a list of zip parts)")
        else:
            for v in [d.videos] if isinstance(d.videos, str) else d.videos:
                if not Path(v).exists():
                    missing.append(f"data.videos: {v}")
    elif d.source == "images":
        if d.images is None:
            missing.append("data.images: not set (an image folder, a CSV or .tar shards)")
        else:
            for v in [d.images] if isinstance(d.images, str) else d.images:
                if not Path(v).exists():
                    missing.append(f"data.images: {v}")
    else:
        if d.cache_dir is None:
            missing.append("data.cache_dir: not set (needed with data.source=cache)")
        elif not Path(d.cache_dir).is_dir():
            missing.append(f"data.cache_dir: {d.cache_dir}")
    return missing
