"""``VC2Model``: VideoCrafter2's UNet, text encoder, VAE and schedule behind the backbone protocol.

Protocol used by training and generation: ``encode_text`` → context, ``encode_video`` → scaled
latents, ``predict_noise`` (sets ``tsm_ctx`` to ``t`` first), ``decode`` → pixels.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from tsm_video.diffusion.schedule import SCHEDULES, VC2Schedule
from tsm_video.models.vc2.checkpoint import (
    PART_PREFIXES,
    CheckpointError,
    check_state_dict,
    read_shapes,
    read_state_dict,
    split_state_dict,
)
from tsm_video.models.vc2.configs import resolve_arch
from tsm_video.models.vc2.text_encoder import VC2TextEncoder
from tsm_video.models.vc2.unet import VC2UNet
from tsm_video.models.vc2.vae import VC2VAE

__all__ = ["VC2Model"]


class VC2Model(nn.Module):
    """The VC2 latent video diffusion model (no trainer, no sampler: see ``tsm_video.diffusion``).

    Children ``unet``, ``text_encoder``, ``vae`` hold the weights; ``schedule`` (a plain
    :class:`VC2Schedule`, never cast to low precision) and ``tsm_ctx`` (a ``TimestepContext`` or
    None, attached by whoever injects TSM layers) are attributes.
    """

    tsm_preset = "vc2"
    text_preset = "vc2-text"

    def __init__(
        self, unet: VC2UNet, text_encoder: VC2TextEncoder, vae: VC2VAE, schedule: VC2Schedule, arch: dict
    ) -> None:
        super().__init__()
        self.unet = unet
        self.text_encoder = text_encoder
        self.vae = vae
        self.schedule = schedule
        self.arch = arch
        self.tsm_ctx = None

    @classmethod
    def from_config(cls, arch: Mapping[str, Any], device=None, dtype=None) -> VC2Model:
        """Build from an arch dict (see :mod:`tsm_video.models.vc2.configs`); ``device="meta"`` is free."""
        arch = resolve_arch(arch)
        dd = {"device": device, "dtype": dtype}
        return cls(
            unet=VC2UNet.from_lvdm_config(arch["unet"], **dd),
            text_encoder=VC2TextEncoder.from_config(arch["text"], **dd),
            vae=VC2VAE.from_config({**arch["vae"], "scale_factor": arch["scale_factor"]}, **dd),
            schedule=SCHEDULES["vc2"](**arch["schedule"]),
            arch=arch,
        )

    # --- checkpoint-named state ---
    def checkpoint_state_dict(self) -> dict[str, torch.Tensor]:
        """Weights under the official keys, plus the 13 schedule buffers (as in ``model.ckpt``)."""
        state = {
            PART_PREFIXES[name] + key: value
            for name in PART_PREFIXES
            for key, value in getattr(self, name).state_dict().items()
        }
        state.update(self.schedule.checkpoint_buffers())
        return state

    def checkpoint_shapes(self) -> tuple[dict[str, tuple[int, ...]], dict[str, tuple[int, ...]]]:
        """``(required weight shapes, optional schedule-buffer shapes)`` under the official keys."""
        required = {
            PART_PREFIXES[name] + key: tuple(value.shape)
            for name in PART_PREFIXES
            for key, value in getattr(self, name).state_dict().items()
        }
        optional = {k: tuple(v.shape) for k, v in self.schedule.checkpoint_buffers().items()}
        return required, optional

    def check_checkpoint(self, shapes: Mapping[str, tuple[int, ...]], source: str) -> None:
        """Raise :class:`CheckpointError` unless ``shapes`` (key → shape) fits this architecture."""
        required, optional = self.checkpoint_shapes()
        check_state_dict(required, shapes, source, "the VC2 architecture of this model", optional)

    def load_checkpoint(self, path: str | os.PathLike) -> None:
        """Load an official ``model.ckpt`` (``state_dict``) or a safetensors file with the full keys.

        Strict: one :class:`CheckpointError` names the file and lists missing, unexpected and
        mis-shaped keys. The schedule buffers may be absent; present ones must equal this
        model's schedule (they are derived, never loaded). On a ``meta`` model only the keys
        and shapes are checked (no tensor data is read).
        """
        source = str(path)
        if any(p.is_meta for p in self.parameters()):
            self.check_checkpoint(read_shapes(path), source)
            return
        state = read_state_dict(path)
        self.load_checkpoint_state(state, source)

    def validate_checkpoint_state(
        self, state: Mapping[str, torch.Tensor], source: str = "<state dict>"
    ) -> None:
        """Raise :class:`CheckpointError` unless ``state`` (official keys) loads strictly into this model.

        Checks keys and shapes, and that present schedule buffers equal this model's schedule.
        """
        self.check_checkpoint({k: tuple(v.shape) for k, v in state.items()}, source)
        _, rest = split_state_dict(state)
        ours = self.schedule.checkpoint_buffers()
        differing = [k for k, v in rest.items() if not torch.allclose(v.float(), ours[k], rtol=1e-6, atol=0)]
        if differing:
            raise CheckpointError(
                f"checkpoint {source}: schedule buffer(s) {differing} differ from {self.schedule!r}; "
                "this is not a VC2-schedule checkpoint (set the arch's 'schedule' section to match)"
            )

    def load_checkpoint_state(
        self, state: Mapping[str, torch.Tensor], source: str = "<state dict>", assign: bool = False
    ) -> None:
        """Load official-keyed tensors (see :meth:`load_checkpoint`) into the parts, strictly.

        ``assign=True`` makes the checkpoint tensors the parameters (no copy; for a model built
        on ``meta``); otherwise they are copied into the existing parameters (keeping their dtype).
        """
        self.validate_checkpoint_state(state, source)
        parts, _ = split_state_dict(state)
        for name, tensors in parts.items():
            getattr(self, name).load_state_dict(tensors, strict=True, assign=assign)

    # --- backbone protocol ---
    def encode_text(self, prompts: Sequence[str]) -> torch.Tensor:
        """Prompts → text context (B, 77, text width)."""
        return self.text_encoder.encode(prompts)

    def encode_video(
        self, pixels: torch.Tensor, sample: bool = True, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """Pixels (B, 3, T, H, W) in [-1, 1] → latents (B, 4, T, H/8, W/8) × scale_factor.

        ``sample=True`` draws from the VAE posterior (VC2's training input), else its mean.
        """
        vae_dtype = self.vae.quant_conv.weight.dtype
        return self.vae.encode(pixels.to(vae_dtype), sample=sample, generator=generator)

    def predict_noise(
        self, x_t: torch.Tensor, t: torch.Tensor, context: torch.Tensor, fps: torch.Tensor | int
    ) -> torch.Tensor:
        """ε for ``x_t`` (B, 4, T, h, w) at timesteps ``t`` (B,); sets ``tsm_ctx`` to ``t`` first."""
        if self.tsm_ctx is not None:
            self.tsm_ctx.set(t)
        return self.unet(x_t, t, context, fps=fps)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Latents (B, 4, T, h, w) × scale_factor → pixels (B, 3, T, 8h, 8w), roughly in [-1, 1]."""
        return self.vae.decode(z.to(self.vae.quant_conv.weight.dtype))
