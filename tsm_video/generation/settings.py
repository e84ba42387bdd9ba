"""Sampling settings of one generation run, checked against the backbone before any model loads."""

from __future__ import annotations

import contextlib
from dataclasses import asdict, dataclass

import torch

from tsm_video.config import GenerateConfig
from tsm_video.errors import TSMVideoError

__all__ = ["GenerateSettings", "SettingsError", "VC2_SAVE_FPS", "PRECISIONS", "precision_context"]

PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
"""Sampler precisions: ``fp32`` (no autocast, the official sampler) or an autocast dtype."""

VC2_SAVE_FPS = 10.0
"""Frame rate of the written files in VC2's own inference script (``--savefps``); the model is
conditioned on ``fps`` (28), which is a different number."""


_DEFAULTS = GenerateConfig()  # one source for VC2's sampling defaults: the config's `generate` section


class SettingsError(TSMVideoError, ValueError):
    """A sampling setting out of range for the backbone, naming the flag and the fix."""


@dataclass(frozen=True)
class GenerateSettings:
    """How clips are sampled: sizes in pixels, DDIM steps/eta, CFG scale, fps conditioning.

    Defaults are VideoCrafter2's (320×512, 16 frames, DDIM 50 steps, eta 1.0, CFG 12, fps 28,
    fp32). ``save_fps`` is the frame rate written into mp4/gif files; ``precision`` is the
    sampler's arithmetic (:data:`PRECISIONS`), recorded with the other settings in generate.json.
    """

    height: int = _DEFAULTS.height
    width: int = _DEFAULTS.width
    num_frames: int = _DEFAULTS.num_frames
    steps: int = _DEFAULTS.steps
    eta: float = _DEFAULTS.eta
    guidance_scale: float = _DEFAULTS.guidance_scale
    fps: int = _DEFAULTS.fps
    save_fps: float = VC2_SAVE_FPS
    precision: str = _DEFAULTS.precision

    @classmethod
    def from_config(cls, generate, **overrides) -> GenerateSettings:
        """Settings from a config's ``generate`` section, with non-``None`` overrides applied."""
        values = {
            key: getattr(generate, key)
            for key in ("height", "width", "num_frames", "steps", "eta", "guidance_scale", "fps", "precision")
        }
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)

    def to_dict(self) -> dict:
        return asdict(self)

    def validate(self, spatial_multiple: int, num_timesteps: int = 1000) -> None:
        """Raise :class:`SettingsError` unless the sizes fit a backbone whose pixels must be a
        multiple of ``spatial_multiple`` (VAE factor × 2^(UNet levels − 1); 64 for VC2)."""
        for key, flag in (("height", "--height"), ("width", "--width")):
            value = getattr(self, key)
            if value <= 0 or value % spatial_multiple:
                fixed = max(spatial_multiple, round(value / spatial_multiple) * spatial_multiple)
                raise SettingsError(
                    f"{flag} {value}: must be a positive multiple of {spatial_multiple} "
                    f"for this backbone (VAE × UNet downsampling); try {fixed}"
                )
        if self.num_frames < 1:
            raise SettingsError(f"--frames {self.num_frames}: need at least 1 frame")
        if not 1 <= self.steps <= num_timesteps:
            raise SettingsError(f"--steps {self.steps}: need 1 <= steps <= {num_timesteps}")
        if self.eta < 0:
            raise SettingsError(f"--eta {self.eta}: must be >= 0")
        if self.guidance_scale < 0:
            raise SettingsError(f"--guidance-scale {self.guidance_scale}: must be >= 0")
        if self.fps <= 0:
            raise SettingsError(f"--fps {self.fps}: must be a positive integer")
        if self.save_fps <= 0:
            raise SettingsError(f"--save-fps {self.save_fps}: must be positive")
        if self.precision not in PRECISIONS:
            raise SettingsError(f"--precision {self.precision}: valid: {', '.join(PRECISIONS)}")


def precision_context(precision: str, device: torch.device | str) -> contextlib.AbstractContextManager:
    """The sampler's arithmetic on ``device``: nothing for ``fp32``, else ``torch.autocast`` to
    bf16/fp16 (on any device type: the choice is explicit, so a CPU run measures the same thing)."""
    if precision not in PRECISIONS:
        raise SettingsError(f"--precision {precision}: valid: {', '.join(PRECISIONS)}")
    dtype = PRECISIONS[precision]
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(torch.device(device).type, dtype=dtype)
