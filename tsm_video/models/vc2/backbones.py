"""VC2's registry entries: ``vc2`` (the released 512 model) and ``vc2-tiny`` (random init, tests)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from functools import partial
from typing import Any

import torch

from tsm_video.models.backbone import BackboneSpec
from tsm_video.models.vc2.checkpoint import read_state_dict
from tsm_video.models.vc2.configs import VC2_ARCH, VC2_TINY_ARCH
from tsm_video.models.vc2.model import VC2Model

__all__ = ["VC2_BACKBONES", "build_vc2", "pixel_multiple"]


def pixel_multiple(arch: Mapping[str, Any]) -> int:
    """Pixel sizes must be multiples of this: VAE downscale × 2^(UNet levels − 1) (64 for VC2)."""
    return 2 ** (len(arch["vae"]["ch_mult"]) - 1) * 2 ** (len(arch["unet"]["channel_mult"]) - 1)


def build_vc2(
    name: str,
    arch: Mapping[str, Any],
    checkpoint: str | os.PathLike | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
) -> VC2Model:
    """Build a :class:`VC2Model` from ``arch``, optionally loading ``checkpoint`` strictly.

    Without a checkpoint the weights are randomly initialised (seed with ``torch.manual_seed``).
    With one, the model is built on ``meta`` (no random init) and takes the checkpoint's tensors,
    then moves to ``device``/``dtype``. ``device="meta"`` only checks the checkpoint's keys and
    shapes (a free dry run, also for the real 1.85 B-parameter config).
    """
    if checkpoint is None or torch.device(device or "cpu").type == "meta":
        model = VC2Model.from_config(arch, device=device, dtype=dtype, name=name)
        if checkpoint is not None:
            model.load_checkpoint(checkpoint)  # meta: keys and shapes only
        return model
    model = VC2Model.from_config(arch, device="meta", name=name)
    model.load_checkpoint_state(read_state_dict(checkpoint), str(checkpoint), assign=True)
    return model.to(device=device or "cpu", dtype=dtype)


def _spec(name: str, arch: Mapping[str, Any], release: str, description: str) -> BackboneSpec:
    return BackboneSpec(
        name=name,
        modality="video",
        builder=partial(build_vc2, name, arch),
        pixel_multiple=pixel_multiple(arch),
        source="tsm_video.models.vc2.configs (LVDM configs/inference_t2v_512_v2.0.yaml)",
        release=release,
        description=description,
    )


#: name → spec of the VC2 family.
VC2_BACKBONES: dict[str, BackboneSpec] = {
    "vc2": _spec(
        "vc2",
        VC2_ARCH,
        "https://huggingface.co/VideoCrafter/VideoCrafter2 (model.ckpt)",
        "VideoCrafter2 512 text-to-video (3D-UNet, OpenCLIP ViT-H text, KL-f8 VAE), 1.85 B parameters",
    ),
    "vc2-tiny": _spec(
        "vc2-tiny",
        VC2_TINY_ARCH,
        "",
        "VC2 architecture at toy widths, random init (demo and tests on a CPU)",
    ),
}
