"""Registry entries of the image backbones: ``sd15``, ``sd2``, ``pixart-alpha``, ``sd3`` (a local
diffusers folder of the release) and their ``-tiny`` twins (same classes, small configs, random
weights, no download)."""

from __future__ import annotations

import os
from functools import partial
from pathlib import Path

import torch

from tsm_video.models.backbone import BackboneSpec

from .base import ImageBackbone
from .components import arch_spec, build_components, check_folder, load_components
from .ddpm import PixArtAlphaBackbone, StableDiffusionBackbone
from .sd3 import SD3Backbone

__all__ = ["IMAGE_BACKBONES", "build_image_backbone"]

_CLASSES: dict[str, type[ImageBackbone]] = {
    "sd15": StableDiffusionBackbone,
    "sd2": StableDiffusionBackbone,
    "pixart-alpha": PixArtAlphaBackbone,
    "sd3": SD3Backbone,
}


def build_image_backbone(
    name: str,
    checkpoint: str | os.PathLike | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
) -> ImageBackbone:
    """Build image backbone ``name``: from the local diffusers folder ``checkpoint``, from a
    one-file checkpoint (:meth:`ImageBackbone.save_checkpoint`), or (None) with random weights
    from its architecture JSON; ``device="meta"`` builds shapes only (a folder, if given, is only
    checked for its files)."""
    cls = _CLASSES[name.removesuffix("-tiny")]
    if checkpoint is not None and Path(checkpoint).is_file():  # one file of save_checkpoint
        model = cls(name, build_components(name, device="cpu"))
        model.load_checkpoint(checkpoint)
        return model.to(device=device or "cpu", dtype=dtype)
    if checkpoint is None or torch.device(device or "cpu").type == "meta":
        if checkpoint is not None:
            check_folder(name, Path(checkpoint))
        parts = build_components(name, device=device, dtype=dtype)
    else:
        parts = load_components(name, checkpoint, device=device, dtype=dtype)
    return cls(name, parts)


def _pixel_multiple(name: str) -> int:
    spec = arch_spec(name)
    vae = 2 ** (len(spec["vae"]["block_out_channels"]) - 1)
    return vae * spec["transformer"]["patch_size"] if "transformer" in spec else vae


_DESCRIPTIONS = {
    "sd15": "Stable Diffusion 1.5 (UNet, CLIP ViT-L/14 text, KL-f8 VAE; eps)",
    "sd2": "Stable Diffusion 2 (UNet, OpenCLIP ViT-H text; eps or v from the scheduler config)",
    "pixart-alpha": "PixArt-alpha XL-2 (DiT, T5-XXL text; eps, learned variance dropped from the loss)",
    "sd3": "Stable Diffusion 3 medium (MM-DiT, CLIP-L + CLIP-G + T5-XXL; rectified flow, t = sigma*1000)",
}


def _spec(name: str) -> BackboneSpec:
    base = name.removesuffix("-tiny")
    release = arch_spec(name).get("release")
    return BackboneSpec(
        name=name,
        modality="image",
        builder=partial(build_image_backbone, name),
        pixel_multiple=_pixel_multiple(name),
        source=f"diffusers classes, tsm_video/models/image/configs/{name}.json",
        release=f"https://huggingface.co/{release} (diffusers folder)" if release else "",
        description=_DESCRIPTIONS[base] + (", toy widths, random init" if name != base else ""),
    )


#: name → spec of the diffusers image backbones.
IMAGE_BACKBONES: dict[str, BackboneSpec] = {n: _spec(n) for b in _CLASSES for n in (b, f"{b}-tiny")}
