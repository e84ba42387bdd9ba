"""vc2."""

from tsm_video.models.vc2.unet import VC2UNet

__all__ = ["VC2UNet"]
