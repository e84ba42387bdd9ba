"""Image backbones through diffusers' own classes and schedulers: SD1.5, SD2 (UNet), PixArt-α
(DiT), SD3 (MM-DiT, rectified flow), each behind :class:`tsm_video.models.backbone.Backbone`.

Registry names (``tsm_video.models.BACKBONES``): ``sd15``, ``sd2``, ``pixart-alpha``, ``sd3``
(``model.checkpoint`` = a local diffusers folder of the release) and ``<name>-tiny`` (the same
classes at toy widths, random weights, offline tokenizers; tests and demos). See docs/images.md.
"""

from .backbones import IMAGE_BACKBONES, build_image_backbone
from .base import ImageBackbone
from .components import ImageBackboneError
from .ddpm import PixArtAlphaBackbone, StableDiffusionBackbone
from .hooks import TSMCompatibilityError, attach_timestep_hook
from .sd3 import FlowTimesteps, SD3Backbone

__all__ = [
    "ImageBackbone",
    "StableDiffusionBackbone",
    "PixArtAlphaBackbone",
    "SD3Backbone",
    "FlowTimesteps",
    "IMAGE_BACKBONES",
    "build_image_backbone",
    "ImageBackboneError",
    "TSMCompatibilityError",
    "attach_timestep_hook",
]
