"""What every diffusers image backbone shares: components, VAE codec, TSM timestep hook, the
stock pipeline as sampler, per-sample MSE loss. Subclasses add their objective and denoiser call.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from tsm_video.diffusion.losses import eps_mse_loss
from tsm_video.models.backbone import Cond, SamplingSettings, StepCallback
from tsm_video.tsm import TimestepContext

from .hooks import attach_timestep_hook, guard_tsm_model

__all__ = ["ImageBackbone"]


class ImageBackbone(nn.Module):
    """A diffusers text-to-image model behind :class:`tsm_video.models.backbone.Backbone`.

    Children are the pipeline's own modules (``unet``/``transformer``, ``vae``,
    ``text_encoder[_2|_3]``); ``tokenizer*`` and ``scheduler`` (the release's sampler) are plain
    attributes; ``pipeline`` is the stock diffusers pipeline over the same objects (no copies),
    used for prompt encoding and sampling. Pixels are (B, 3, H, W) in [-1, 1]; latents
    (B, C, H/f, W/f) scaled as the release trains them (``(z - shift) · scaling``).
    """

    modality = "image"
    denoiser_targets = "sd"  # App. A.1: to_q, to_k, to_v, to_out.0 of every attention
    denoiser_key = "unet"
    pipeline_class: type | None = None
    text_keys: dict[str, str] = {}  # protocol name → component attribute
    text_preset: str = ""

    def __init__(self, name: str, parts: dict[str, Any]) -> None:
        super().__init__()
        self.name = name
        for key, part in parts.items():
            setattr(self, key, part)
        self.num_timesteps = int(self.scheduler.config.num_train_timesteps)
        self._tsm_ctx: TimestepContext | None = None
        self.pipeline = self.pipeline_class(**self._pipeline_parts(parts))
        self.pipeline.set_progress_bar_config(disable=True)
        attach_timestep_hook(self.denoiser, lambda: self._tsm_ctx)
        guard_tsm_model(self.denoiser)

    def _pipeline_parts(self, parts: dict[str, Any]) -> dict[str, Any]:
        return dict(parts)

    # --- protocol attributes ---
    @property
    def denoiser(self) -> nn.Module:
        return getattr(self, self.denoiser_key)

    @property
    def tsm_ctx(self) -> TimestepContext | None:
        """The TSM layers' context; the denoiser's forward pre-hook sets it from ``timestep``."""
        return self._tsm_ctx

    @tsm_ctx.setter
    def tsm_ctx(self, ctx: TimestepContext | None) -> None:
        if ctx is not None and ctx.num_timesteps != self.num_timesteps:
            raise ValueError(
                f"TimestepContext has T={ctx.num_timesteps}, backbone {self.name!r} T={self.num_timesteps}"
            )
        self._tsm_ctx = ctx

    @property
    def text_encoders(self) -> dict[str, nn.Module]:
        return {name: getattr(self, key) for name, key in self.text_keys.items()}

    @property
    def text_targets(self) -> dict[str, list[str]]:
        """Per text encoder, the full names of the preset's modules (every block runs)."""
        from tsm_video.tsm import PRESETS

        suffixes = PRESETS[self.text_preset]
        return {
            name: [n for n, _ in enc.named_modules() if any(n == s or n.endswith("." + s) for s in suffixes)]
            for name, enc in self.text_encoders.items()
        }

    @property
    def device(self) -> torch.device:
        return next(self.denoiser.parameters()).device

    @property
    def vae_scale_factor(self) -> int:
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    # --- one-file checkpoints (FullCheckpoint: the demo's `base` stage) ---
    def save_checkpoint(self, path: str | os.PathLike) -> None:
        """Every component's weights (``unet.*``/``transformer.*``, ``vae.*``, ``text_encoder*.*``)
        in one safetensors file, written atomically; the builder loads it as ``checkpoint``."""
        from safetensors.torch import save_file

        from tsm_video.fileio import atomic_path

        state = {k: v.detach().cpu().contiguous().clone() for k, v in self.state_dict().items()}
        with atomic_path(path) as tmp:  # clones: T5's tied embeddings must not share storage
            save_file(state, str(tmp), metadata={"format": "pt", "backbone": self.name})

    def load_checkpoint(self, path: str | os.PathLike) -> None:
        """Load a :meth:`save_checkpoint` file strictly (every key, every shape)."""
        from safetensors.torch import load_file

        from tsm_video.models.backbone import CheckpointError

        try:
            state = load_file(str(path))
        except (OSError, ValueError) as err:
            raise CheckpointError(f"cannot read {path} as safetensors: {err}") from err
        try:
            self.load_state_dict(state, strict=True)
        except RuntimeError as err:
            raise CheckpointError(f"{path} does not fit backbone {self.name!r}: {str(err)[:400]}") from err

    def convert_checkpoint(self, source: str | os.PathLike, out: str | os.PathLike) -> int:
        """A local diffusers folder of the release → one :meth:`save_checkpoint` file."""
        from .backbones import build_image_backbone

        model = build_image_backbone(self.name, checkpoint=source)
        model.save_checkpoint(out)
        return len(model.state_dict())

    # --- pixels <-> latents ---
    def encode_pixels(self, pixels: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """(B, 3, H, W) in [-1, 1] → (B, C, H/f, W/f): posterior sample, ``(z - shift) · scaling``."""
        if pixels.ndim != 4:
            raise ValueError(f"{self.name}: pixels must be (B, 3, H, W), got {tuple(pixels.shape)}")
        vae = self.vae
        z = vae.encode(pixels.to(vae.dtype)).latent_dist.sample(generator=generator)
        shift = vae.config.get("shift_factor") or 0.0
        return (z - shift) * vae.config.scaling_factor

    def decode(self, latents: Tensor) -> Tensor:
        """(B, C, h, w) scaled latents → (B, 3, f·h, f·w) pixels, roughly in [-1, 1]."""
        vae = self.vae
        shift = vae.config.get("shift_factor") or 0.0
        z = latents.to(vae.dtype) / vae.config.scaling_factor + shift
        return vae.decode(z).sample

    def latent_shape(self, settings: SamplingSettings) -> tuple[int, int, int]:
        """``(C, H/f, W/f)`` of one image at ``settings``' height and width."""
        f = self.vae_scale_factor
        return (int(self.vae.config.latent_channels), settings.height // f, settings.width // f)

    # --- training ---
    def loss(self, pred: Tensor, target: Tensor) -> Tensor:
        """Per-sample MSE (B,) in float32 (diffusers' training scripts, before the batch mean)."""
        return eps_mse_loss(pred, target, reduction="none")

    def predict(self, x_t: Tensor, t: Tensor, cond: Cond, **extras: Any) -> Tensor:
        """The denoiser's raw output for ``x_t`` at ``t`` (B,) under ``cond``; the forward pre-hook
        sets ``tsm_ctx`` to ``t``. No ``extras`` are used by image backbones."""
        return self._denoise(x_t, t, cond)

    def _denoise(self, x_t: Tensor, t: Tensor, cond: Cond) -> Tensor:
        raise NotImplementedError

    # --- sampling ---
    def _pipeline_kwargs(self, cond: Cond, uncond: Cond, batch: int) -> dict[str, Any]:
        raise NotImplementedError

    @staticmethod
    def _expand(cond: Tensor, batch: int) -> Tensor:
        return cond.expand(batch, *cond.shape[1:]) if cond.shape[0] == 1 else cond

    @torch.no_grad()
    def sample(
        self,
        x_T: Tensor,
        cond: Cond,
        uncond: Cond,
        settings: SamplingSettings,
        generators: Sequence[torch.Generator],
        callback: StepCallback | None = None,
    ) -> Tensor:
        """The stock pipeline (release scheduler, CFG) from ``x_T`` (B, C, h, w) → latents.

        ``callback(i, t)`` runs from a forward pre-hook before the denoiser call of step ``i``
        (one call per step: the pipeline batches the CFG rows), ahead of the hook that sets
        ``tsm_ctx``, so an expert merged for ``t`` is in place when the context checks it.
        """
        batch = x_T.shape[0]
        step = [0]

        def before(module: nn.Module, args: tuple, kwargs: dict) -> None:
            from .hooks import timestep_argument

            t, _ = timestep_argument(module, args, kwargs)
            callback(step[0], float(t.reshape(-1)[0]))
            step[0] += 1

        handle = (
            self.denoiser.register_forward_pre_hook(before, with_kwargs=True, prepend=True)
            if callback
            else None
        )
        try:
            out = self.pipeline(
                latents=x_T,
                height=x_T.shape[-2] * self.vae_scale_factor,
                width=x_T.shape[-1] * self.vae_scale_factor,
                num_inference_steps=settings.steps,
                guidance_scale=settings.guidance_scale,
                generator=list(generators),
                output_type="latent",
                **self._pipeline_kwargs(cond, uncond, batch),
                **self._sampler_kwargs(settings),
            )
        finally:
            if handle is not None:
                handle.remove()
        return out.images

    def _sampler_kwargs(self, settings: SamplingSettings) -> dict[str, Any]:
        return {}
