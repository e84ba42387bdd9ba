"""``VC2Model``: VideoCrafter2's UNet, text encoder, VAE and schedule behind the backbone protocol.

Implements :class:`tsm_video.models.backbone.Backbone` (ε-prediction, integer ``t`` in
``[0, 1000)``, LVDM noising with ``scale_arr``, the official DDIM sampler). ``encode_video`` and
``predict_noise`` are VC2's own names for ``encode_pixels`` and ``predict``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from tsm_video.diffusion.ddim import ddim_sample
from tsm_video.diffusion.losses import eps_mse_loss
from tsm_video.diffusion.schedule import SCHEDULES, VC2Schedule
from tsm_video.models.backbone import SamplingSettings, StepCallback
from tsm_video.models.vc2.checkpoint import (
    PART_PREFIXES,
    CheckpointError,
    check_state_dict,
    read_shapes,
    read_state_dict,
    save_safetensors,
    split_state_dict,
)
from tsm_video.models.vc2.configs import resolve_arch
from tsm_video.models.vc2.text_encoder import VC2TextEncoder
from tsm_video.models.vc2.unet import VC2UNet
from tsm_video.models.vc2.vae import VC2VAE
from tsm_video.tsm import PRESETS, IntervalSchedule

__all__ = ["VC2Model"]


class VC2Model(nn.Module):
    """The VC2 latent video diffusion model, a :class:`~tsm_video.models.backbone.Backbone`.

    Children ``unet`` (the ``denoiser``), ``text_encoder``, ``vae`` hold the weights; ``schedule``
    (a plain :class:`VC2Schedule`, never cast to low precision) and ``tsm_ctx`` (a
    ``TimestepContext`` or None, attached by whoever injects TSM layers) are attributes.
    """

    modality = "video"
    prediction = "eps"
    continuous_time = False
    denoiser_targets = "vc2"  # App. A.1: k, v of the spatial and temporal attention
    text_preset = "vc2-text"  # the text LoRA's modules (OpenCLIP attention out_proj)

    def __init__(
        self,
        unet: VC2UNet,
        text_encoder: VC2TextEncoder,
        vae: VC2VAE,
        schedule: VC2Schedule,
        arch: dict,
        name: str = "vc2",
    ) -> None:
        super().__init__()
        self.name = name
        self.unet = unet
        self.text_encoder = text_encoder
        self.vae = vae
        self.schedule = schedule
        self.arch = arch
        self.tsm_ctx = None

    @classmethod
    def from_config(cls, arch: Mapping[str, Any], device=None, dtype=None, name: str = "vc2") -> VC2Model:
        """Build from an arch dict (see :mod:`tsm_video.models.vc2.configs`); ``device="meta"`` is free."""
        arch = resolve_arch(arch)
        dd = {"device": device, "dtype": dtype}
        return cls(
            unet=VC2UNet.from_lvdm_config(arch["unet"], **dd),
            text_encoder=VC2TextEncoder.from_config(arch["text"], **dd),
            vae=VC2VAE.from_config({**arch["vae"], "scale_factor": arch["scale_factor"]}, **dd),
            schedule=SCHEDULES["vc2"](**arch["schedule"]),
            arch=arch,
            name=name,
        )

    # --- protocol attributes ---
    @property
    def num_timesteps(self) -> int:
        return self.schedule.num_timesteps

    @property
    def denoiser(self) -> VC2UNet:
        return self.unet

    @property
    def text_encoders(self) -> dict[str, nn.Module]:
        return {"text": self.text_encoder}

    @property
    def text_targets(self) -> dict[str, list[str]]:
        """``{"text": names}``: the ``vc2-text`` modules of the blocks that run (VC2 reads the
        penultimate layer, so the last block's are left out)."""
        return {"text": self.text_encoder.running_modules(PRESETS[self.text_preset])}

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

    def save_checkpoint(self, path: str | os.PathLike) -> None:
        """:meth:`checkpoint_state_dict` as one safetensors file (atomic): loads like a ``model.ckpt``."""
        save_safetensors({k: v.detach().cpu() for k, v in self.checkpoint_state_dict().items()}, path)

    def convert_checkpoint(self, source: str | os.PathLike, out: str | os.PathLike) -> int:
        """Official ``model.ckpt`` → safetensors with the same (full) keys at ``out`` (atomic).

        The checkpoint must fit this architecture exactly (:class:`CheckpointError` otherwise; a
        ``meta`` model suffices); absent schedule buffers are written from the schedule, so the
        output always holds the full official key set. Returns the number of tensors.
        """
        source, out = Path(source), Path(out)
        if out.suffix != ".safetensors":
            raise CheckpointError(f"output {out} must end in .safetensors")
        if out.resolve() == source.resolve():
            raise CheckpointError(f"output {out} would overwrite the input checkpoint")
        state = read_state_dict(source)
        self.validate_checkpoint_state(state, str(source))
        state = {**self.schedule.checkpoint_buffers(), **state}
        save_safetensors(state, out, metadata={"format": "pt", "backbone": self.name, "source": source.name})
        return len(state)

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

    def encode_pixels(self, pixels: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Protocol name of :meth:`encode_video` with a posterior sample (the training input)."""
        return self.encode_video(pixels, sample=True, generator=generator)

    def sample_t(
        self, intervals: torch.Tensor, scale: int, generator: torch.Generator | None
    ) -> torch.Tensor:
        """(B,) interval ids of ``scale`` → (B,) long ``t`` uniform in each interval's integers.

        Drawn by :meth:`tsm_video.tsm.IntervalSchedule.uniform_in` on the CPU with ``generator``
        (``scale=1``: ``t ~ U{0, …, T-1}``, VC2's training distribution); on ``intervals``' device.
        """
        t = IntervalSchedule(self.num_timesteps).uniform_in(intervals.cpu(), scale, generator)
        return t.to(intervals.device)

    def add_noise(
        self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(x_t, ε)``: LVDM's ``q_sample`` with ``scale_arr`` (see :meth:`VC2Schedule.q_sample`);
        the target is the noise itself (ε-prediction)."""
        return self.schedule.q_sample(x0, t, noise), noise

    def loss(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Per-sample ε-MSE (B,) in float32 (LVDM's ``loss_simple`` before the batch mean)."""
        return eps_mse_loss(pred, target, reduction="none")

    def predict_noise(
        self, x_t: torch.Tensor, t: torch.Tensor, context: torch.Tensor, fps: torch.Tensor | int
    ) -> torch.Tensor:
        """ε for ``x_t`` (B, 4, T, h, w) at timesteps ``t`` (B,); sets ``tsm_ctx`` to ``t`` first."""
        if self.tsm_ctx is not None:
            self.tsm_ctx.set(t)
        return self.unet(x_t, t, context, fps=fps)

    def predict(
        self, x_t: torch.Tensor, t: torch.Tensor, cond: torch.Tensor, fps: torch.Tensor | int = 28
    ) -> torch.Tensor:
        """Protocol name of :meth:`predict_noise`; ``fps`` (B,) or int, rounded to integers as
        VC2 conditions on them (default 28, VC2's generation setting)."""
        if isinstance(fps, torch.Tensor):
            fps = fps.round().long()
        return self.predict_noise(x_t, t, cond, fps)

    def latent_shape(self, settings: SamplingSettings) -> tuple[int, int, int, int]:
        """``(C, F, H/8, W/8)`` of one clip of ``settings`` (C = the VAE's ``embed_dim``)."""
        factor = self.vae.downscale
        channels = self.vae.config["embed_dim"]
        return (channels, settings.num_frames, settings.height // factor, settings.width // factor)

    @torch.no_grad()
    def sample(
        self,
        x_T: torch.Tensor,
        cond: torch.Tensor,
        uncond: torch.Tensor,
        settings: SamplingSettings,
        generators: Sequence[torch.Generator],
        callback: StepCallback | None = None,
    ) -> torch.Tensor:
        """The official DDIM (:func:`tsm_video.diffusion.ddim_sample`) with CFG on ``uncond``,
        ``settings``' steps, eta, guidance scale and fps; row ``k``'s eta-noise from ``generators[k]``."""
        return ddim_sample(
            self.predict_noise,
            x_T,
            cond,
            uncond,
            fps=settings.fps,
            steps=settings.steps,
            eta=settings.eta,
            guidance_scale=settings.guidance_scale,
            schedule=self.schedule,
            generator=list(generators),
            callback=callback,
        )

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Latents (B, 4, T, h, w) × scale_factor → pixels (B, 3, T, 8h, 8w), roughly in [-1, 1]."""
        return self.vae.decode(z.to(self.vae.quant_conv.weight.dtype))
