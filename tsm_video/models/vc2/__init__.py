"""VideoCrafter2 (LVDM) re-implemented natively: 3D-UNet, OpenCLIP text encoder, KL-f8 VAE."""

from tsm_video.models.vc2.checkpoint import CheckpointError
from tsm_video.models.vc2.configs import VC2_ARCH, VC2_TINY_ARCH
from tsm_video.models.vc2.model import VC2Model
from tsm_video.models.vc2.text_encoder import VC2TextEncoder
from tsm_video.models.vc2.unet import VC2UNet
from tsm_video.models.vc2.vae import VC2VAE

__all__ = ["VC2_ARCH", "VC2_TINY_ARCH", "CheckpointError", "VC2Model", "VC2TextEncoder", "VC2UNet", "VC2VAE"]
