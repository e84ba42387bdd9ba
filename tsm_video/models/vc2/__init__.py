"""VideoCrafter2 (LVDM) re-implemented natively: 3D-UNet, OpenCLIP text encoder, KL-f8 VAE."""

from tsm_video.models.vc2.text_encoder import VC2TextEncoder
from tsm_video.models.vc2.unet import VC2UNet
from tsm_video.models.vc2.vae import VC2VAE

__all__ = ["VC2TextEncoder", "VC2UNet", "VC2VAE"]
