"""The backbone protocol: everything ``train/`` and ``generation/`` may ask of a diffusion model.

A backbone is one object (an ``nn.Module``) that owns its text encoder(s), its pixel↔latent
codec (VAE), its denoiser, its noise schedule with that schedule's training-time sampler and
loss, and its own inference sampler. Trainers and generators never look inside: they call the
methods of :class:`Backbone`, inject TSM layers into ``denoiser`` / ``text_encoders`` with the
presets the backbone names, and set nothing but ``tsm_ctx``.

The training step of every backbone, written only with the protocol::

    latents = backbone.encode_pixels(pixels, generator=g)           # or read from a cache
    cond = backbone.encode_text(captions)
    t = backbone.sample_t(interval_ids, scale, g)                   # trainer picks the intervals
    x_t, target = backbone.add_noise(latents, noise, t)
    loss = backbone.loss(backbone.predict(x_t, t, cond, **extras), target)   # (B,) float32

Registry entries (:class:`BackboneSpec`) live in :mod:`tsm_video.models.registry`; see
docs/design.md, "How to add a backbone".
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import torch
from torch import Tensor, nn

from tsm_video.errors import TSMVideoError
from tsm_video.tsm import TimestepContext

__all__ = [
    "Backbone",
    "BackboneSpec",
    "BackboneBuilder",
    "CheckpointError",
    "Cond",
    "FullCheckpoint",
    "SamplingSettings",
    "StepCallback",
]

Cond = Tensor | Mapping[str, Tensor]
"""Text conditioning: one batch-first tensor (VC2: (B, 77, D)) or a dict of batch-first tensors."""

StepCallback = Callable[[int, float], None]
"""``callback(step_index, t)``: runs before the denoiser calls of sampling step ``step_index``."""


class SamplingSettings(Protocol):
    """What :meth:`Backbone.latent_shape` / :meth:`Backbone.sample` read from generation settings
    (``tsm_video.generation.GenerateSettings`` provides all of it; image backbones ignore
    ``num_frames`` and ``fps``)."""

    height: int
    width: int
    num_frames: int
    steps: int
    eta: float
    guidance_scale: float
    fps: int


@runtime_checkable
class Backbone(Protocol):
    """A text-to-video or text-to-image diffusion model, as training and generation see it.

    Attributes:
        name: registry name (``"vc2"``, ``"vc2-tiny"``, ...).
        modality: ``"video"`` (pixels (B, 3, F, H, W)) or ``"image"`` (pixels (B, 3, H, W)).
        prediction: the training target: ``"eps"``, ``"v"`` or ``"flow"``.
        num_timesteps: ``T``; TSM intervals split ``[0, T)`` (or ``[0, T]`` in continuous time)
            on the ``t`` the denoiser receives.
        continuous_time: ``t`` is a float (e.g. ``σ·1000``) rather than an integer in ``[0, T)``.
        denoiser: the module TSM denoiser layers are injected into (``inject(backbone.denoiser,
            backbone.denoiser_targets, ...)``).
        denoiser_targets: the :data:`tsm_video.tsm.PRESETS` name of the paper's denoiser targets.
        text_encoders: text-LoRA-able encoders by name.
        text_targets: per text encoder, the module names (relative to that encoder) a text LoRA
            wraps: only modules whose output reaches the conditioning.
        tsm_ctx: the ``TimestepContext`` of injected TSM layers, or None; :meth:`predict` sets it.
    """

    name: str
    modality: str
    prediction: str
    num_timesteps: int
    continuous_time: bool
    denoiser: nn.Module
    denoiser_targets: str
    text_encoders: dict[str, nn.Module]
    text_targets: dict[str, list[str]]
    tsm_ctx: TimestepContext | None

    def encode_text(self, prompts: Sequence[str]) -> Cond:
        """B prompts → conditioning (batch-first); ``""`` gives the unconditional branch."""
        ...

    def encode_pixels(self, pixels: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Pixels in [-1, 1] (video (B, 3, F, H, W) / image (B, 3, H, W)) → the latents the
        denoiser is trained on (VAE posterior sample drawn with ``generator``, scaled)."""
        ...

    def sample_t(self, intervals: Tensor, scale: int, generator: torch.Generator | None) -> Tensor:
        """(B,) interval ids at ``scale`` → (B,) timesteps from the training distribution
        restricted to each interval (integer backbones: long, uniform in the interval's integer
        range). ``scale=1`` with ids 0 is the plain training distribution. Draws on the CPU
        with ``generator``; the result is on ``intervals``' device."""
        ...

    def add_noise(self, x0: Tensor, noise: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        """Clean latents (B, ...) + standard-normal ``noise`` at timesteps ``t`` (B,) →
        ``(x_t, target)``, the denoiser's input and its regression target."""
        ...

    def loss(self, pred: Tensor, target: Tensor) -> Tensor:
        """Per-sample training loss (B,) float32 of the denoiser output ``pred`` vs ``target``."""
        ...

    def predict(self, x_t: Tensor, t: Tensor, cond: Cond, **extras: Any) -> Tensor:
        """The denoiser's output for ``x_t`` at ``t`` (B,) under ``cond``; sets ``tsm_ctx`` to
        ``t`` first. ``extras`` are backbone-specific conditioning (VC2: ``fps``)."""
        ...

    def latent_shape(self, settings: SamplingSettings) -> tuple[int, ...]:
        """One sample's latent shape (no batch dim) for generation at ``settings``' size."""
        ...

    def sample(
        self,
        x_T: Tensor,
        cond: Cond,
        uncond: Cond,
        settings: SamplingSettings,
        generators: Sequence[torch.Generator],
        callback: StepCallback | None = None,
    ) -> Tensor:
        """The backbone's own sampler with classifier-free guidance from ``x_T`` (B, *latent_shape)
        → final latents. ``uncond`` may have batch 1. Row ``k``'s sampler noise comes from
        ``generators[k]``; ``callback(i, t)`` runs before the denoiser calls of step ``i``."""
        ...

    def decode(self, latents: Tensor) -> Tensor:
        """Latents → pixels in [-1, 1] (roughly; not clamped)."""
        ...


class CheckpointError(TSMVideoError, ValueError):
    """A checkpoint (file or folder) that is missing, unreadable or does not fit the architecture."""


@runtime_checkable
class FullCheckpoint(Protocol):
    """Optional capability: the whole model round-trips through one safetensors file, which the
    registry's builder takes as ``checkpoint`` (the ``base`` stage trains the denoiser and writes
    one; ``tsm-video export`` converts the released file into one)."""

    def save_checkpoint(self, path: str | os.PathLike) -> None:
        """Write every weight to ``path`` (safetensors, atomically), as the builder loads it."""
        ...

    def load_checkpoint(self, path: str | os.PathLike) -> None:
        """Load such a file (or the released checkpoint) into this model, strictly."""
        ...

    def convert_checkpoint(self, source: str | os.PathLike, out: str | os.PathLike) -> int:
        """Released checkpoint ``source`` → ``out`` in the format of :meth:`save_checkpoint`,
        checked strictly against this architecture (a ``meta`` model suffices); returns the
        number of tensors written. Raises :class:`CheckpointError`."""
        ...


BackboneBuilder = Callable[
    [str | os.PathLike | None, torch.device | str | None, torch.dtype | None], Backbone
]
"""``builder(checkpoint, device, dtype) -> Backbone`` (see :func:`tsm_video.models.build_backbone`)."""


@dataclass(frozen=True)
class BackboneSpec:
    """A registry entry: how to build a backbone, and what a user needs to know before doing so.

    Attributes:
        name: registry name (the key in ``BACKBONES``).
        modality: ``"video"`` or ``"image"``.
        builder: ``builder(checkpoint, device, dtype)``; ``checkpoint=None`` is a seeded random
            init (``torch.manual_seed`` first), ``device="meta"`` builds shapes only (dry runs).
        pixel_multiple: generation sizes must be multiples of this (latent downscale × the
            denoiser's own downsampling).
        source: where the architecture comes from (config file, arch dict).
        release: where the pretrained weights are published (``""`` for random-init twins).
        description: one line for listings.
    """

    name: str
    modality: str
    builder: BackboneBuilder
    pixel_multiple: int
    source: str
    release: str = ""
    description: str = ""

    def __post_init__(self) -> None:
        if self.modality not in ("video", "image"):
            raise ValueError(
                f"backbone {self.name!r}: modality must be 'video' or 'image', got {self.modality!r}"
            )
        if self.pixel_multiple < 1:
            raise ValueError(
                f"backbone {self.name!r}: pixel_multiple must be >= 1, got {self.pixel_multiple}"
            )
