"""Diffusers/transformers components of an image backbone: from a local diffusers folder, or
built from an architecture JSON (``configs/<name>.json``) with random weights or on ``meta``.

An architecture JSON holds one entry per pipeline component (``unet``/``transformer``, ``vae``,
``text_encoder[_2|_3]``, ``tokenizer[_2|_3]``, ``scheduler``) plus ``release``, the Hugging Face
repository the real weights are published in. Classes come from fixed tables below: neither a
folder's ``model_index.json`` nor a JSON file can make this code import a class by name.
"""

from __future__ import annotations

import json
import os
from functools import cache
from pathlib import Path
from typing import Any

import torch
from torch import nn

from tsm_video.errors import TSMVideoError

__all__ = [
    "ImageBackboneError",
    "arch_spec",
    "build_components",
    "load_components",
    "required_files",
    "check_folder",
    "SCHEDULERS",
]

_CONFIG_DIR = Path(__file__).with_name("configs")


class ImageBackboneError(TSMVideoError, ValueError):
    """A missing or unusable diffusers folder or component (the message names file and fix)."""


def _model_classes() -> dict[str, type]:
    from diffusers import (
        AutoencoderKL,
        PixArtTransformer2DModel,
        SD3Transformer2DModel,
        UNet2DConditionModel,
    )
    from transformers import CLIPTextModel, CLIPTextModelWithProjection, T5EncoderModel

    return {
        c.__name__: c
        for c in (
            AutoencoderKL,
            PixArtTransformer2DModel,
            SD3Transformer2DModel,
            UNet2DConditionModel,
            CLIPTextModel,
            CLIPTextModelWithProjection,
            T5EncoderModel,
        )
    }


def _scheduler_classes() -> dict[str, type]:
    import diffusers

    return {n: getattr(diffusers, n) for n in SCHEDULERS}


#: Sampling schedulers a release (or ``generate``) may name; training uses DDPM / flow matching.
SCHEDULERS = (
    "DDIMScheduler",
    "DDPMScheduler",
    "PNDMScheduler",
    "DPMSolverMultistepScheduler",
    "EulerDiscreteScheduler",
    "EulerAncestralDiscreteScheduler",
    "UniPCMultistepScheduler",
    "FlowMatchEulerDiscreteScheduler",
)

_TEXT = ("text_encoder", "text_encoder_2", "text_encoder_3")
_DIFFUSERS_WEIGHTS = "diffusion_pytorch_model.safetensors"
_TRANSFORMERS_WEIGHTS = "model.safetensors"


@cache
def arch_spec(name: str) -> dict[str, Any]:
    """The architecture JSON of backbone ``name`` (``sd15``, ``sd3-tiny``, ...), read once."""
    path = _CONFIG_DIR / f"{name}.json"
    if not path.is_file():
        raise ImageBackboneError(f"no architecture config {path.name} in {_CONFIG_DIR}")
    return json.loads(path.read_text())


def _model_parts(spec: dict) -> list[str]:
    return [k for k in ("unet", "transformer", "vae", *_TEXT) if k in spec]


def _tokenizer(spec: dict, key: str):
    from .tokenizers import clip_tokenizer, t5_tokenizer

    cfg = spec[key]
    text_cls = spec[key.replace("tokenizer", "text_encoder")]["_class_name"]
    if text_cls == "T5EncoderModel":
        return t5_tokenizer(cfg["model_max_length"])
    return clip_tokenizer(cfg["pad_token"], cfg["model_max_length"])


def _scheduler(cfg: dict):
    cls = _scheduler_classes().get(cfg["_class_name"])
    if cls is None:
        raise ImageBackboneError(
            f"scheduler {cfg['_class_name']!r} is not supported; valid: {list(SCHEDULERS)}"
        )
    return cls.from_config({k: v for k, v in cfg.items() if k != "_class_name"})


def _instantiate(cls: type, cfg: dict) -> nn.Module:
    cfg = {k: v for k, v in cfg.items() if not k.startswith("_")}
    if hasattr(cls, "from_config"):  # diffusers ModelMixin
        return cls.from_config(cfg)
    config_cls = cls.config_class
    return cls(config_cls(**cfg))


def build_components(
    name: str, device: torch.device | str | None = None, dtype: torch.dtype | None = None
) -> dict[str, Any]:
    """Every pipeline component of ``name`` from its architecture JSON, no download.

    Random weights (seed with ``torch.manual_seed``), or no storage at all with ``device="meta"``
    (the real architectures for ``--dry-run``). Tokenizers are built offline
    (:mod:`~tsm_video.models.image.tokenizers`).
    """
    spec = arch_spec(name)
    classes = _model_classes()
    parts: dict[str, Any] = {}
    with torch.device(device or "cpu"):
        for key in _model_parts(spec):
            parts[key] = _instantiate(classes[spec[key]["_class_name"]], spec[key])
    for key in _model_parts(spec):
        parts[key].eval().requires_grad_(False)
        if dtype is not None:
            parts[key].to(dtype)
    for key in ("tokenizer", "tokenizer_2", "tokenizer_3"):
        if key in spec:
            parts[key] = _tokenizer(spec, key)
    parts["scheduler"] = _scheduler(spec["scheduler"])
    return parts


def required_files(name: str) -> list[str]:
    """The files a local diffusers folder of backbone ``name`` must hold (relative paths)."""
    spec = arch_spec(name)
    files = ["model_index.json", "scheduler/scheduler_config.json"]
    for key in _model_parts(spec):
        weights = _TRANSFORMERS_WEIGHTS if key in _TEXT else _DIFFUSERS_WEIGHTS
        files += [f"{key}/config.json", f"{key}/{weights}"]
    files += [
        f"{key}/tokenizer_config.json" for key in ("tokenizer", "tokenizer_2", "tokenizer_3") if key in spec
    ]
    return files


def check_folder(name: str, root: Path) -> None:
    """Raise :class:`ImageBackboneError` naming the first :func:`required_files` entry missing in ``root``."""
    release = arch_spec(name).get("release")
    where = f"the diffusers release https://huggingface.co/{release}" if release else "a diffusers folder"
    if not root.is_dir():
        raise ImageBackboneError(
            f"backbone {name!r}: diffusers folder not found: {root} (download {where} to a local folder "
            "and pass it as model.checkpoint)"
        )
    for rel in required_files(name):
        sharded = rel.replace(".safetensors", ".safetensors.index.json")
        if not (root / rel).is_file() and not (rel.endswith(".safetensors") and (root / sharded).is_file()):
            raise ImageBackboneError(
                f"backbone {name!r}: {root / rel} is missing; {root} must hold {where} "
                "(safetensors weights; .bin files are not read)"
            )


def load_components(
    name: str,
    root: str | os.PathLike,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
) -> dict[str, Any]:
    """Every component of backbone ``name`` from the local diffusers folder ``root``.

    ``local_files_only`` and safetensors only (no pickle); classes come from the architecture
    JSON, not from the folder. A missing file raises :class:`ImageBackboneError` naming it and
    the release to download.
    """
    from transformers import AutoTokenizer

    root = Path(root)
    check_folder(name, root)
    spec = arch_spec(name)
    classes = _model_classes()
    parts: dict[str, Any] = {}
    for key in _model_parts(spec):
        cls = classes[spec[key]["_class_name"]]
        kwargs = {"local_files_only": True, "use_safetensors": True}
        if dtype is not None:
            kwargs["torch_dtype" if key not in _TEXT else "dtype"] = dtype
        try:
            if key in _TEXT:
                model = cls.from_pretrained(root / key, **kwargs)
            else:
                model = cls.from_pretrained(root, subfolder=key, **kwargs)
        except (OSError, ValueError, RuntimeError) as err:
            raise ImageBackboneError(
                f"backbone {name!r}: cannot load {root / key} as {cls.__name__}: {str(err).splitlines()[0]}"
            ) from err
        parts[key] = model.to(device or "cpu").eval().requires_grad_(False)
    for key in ("tokenizer", "tokenizer_2", "tokenizer_3"):
        if key in spec:
            parts[key] = AutoTokenizer.from_pretrained(root / key, local_files_only=True)
    sched = json.loads((root / "scheduler" / "scheduler_config.json").read_text())
    parts["scheduler"] = _scheduler(sched)
    return parts
