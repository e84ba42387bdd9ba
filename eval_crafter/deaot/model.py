"""The R50-DeAOT-L network: encoder, propagation transformer, decoder and identity bank.

Configuration of the official ``R50_DeAOTL`` model (aot-benchmark ``configs/models``):
ResNet-50 stages 1-3 with frozen batch norm (stride 16), a 1x1 projection of the last
stage to 256 channels, 3 dual-branch propagation layers with single-head attention, an
FPN decoder over the stride-16/8/4 features with 11 outputs (background + 10 identities),
and a 17x17 stride-16 convolution that embeds a one-hot id mask (``patch_wise_id_bank``)
followed by a LayerNorm (``id_norm``). The official checkpoint loads strictly.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.resnet import Bottleneck, ResNet

from eval_crafter.checkpoint import checkpoint_state_dict, load_checkpoint
from eval_crafter.deaot.layers import ConvGN, DualBranchPropagation, FrozenBatchNorm2d
from eval_crafter.errors import IncompatibleModelError

__all__ = ["DeAOT", "ResNet50Encoder", "FPNDecoder", "load_deaot", "MAX_OBJECTS", "EMBED_DIM"]

MAX_OBJECTS = 10  # identities per model pass (MODEL_MAX_OBJ_NUM)
EMBED_DIM = 256  # MODEL_ENCODER_EMBEDDING_DIM


class ResNet50Encoder(ResNet):
    """ResNet-50 stages 1-3 (frozen batch norm); returns the stride-4, 8 and 16 features."""

    def __init__(self) -> None:
        super().__init__(Bottleneck, [3, 4, 6, 3], norm_layer=FrozenBatchNorm2d)
        del self.layer4, self.avgpool, self.fc  # the official encoder stops after stage 3

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """(B, 3, H, W) -> [(B, 256, H/4), (B, 512, H/8), (B, 1024, H/16)] (sizes rounded up)."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        s4 = self.layer1(x)
        s8 = self.layer2(s4)
        return [s4, s8, self.layer3(s8)]


class FPNDecoder(nn.Module):
    """Stride-16 propagation output + encoder features -> stride-4 identity logits."""

    def __init__(
        self,
        in_dim: int = 2 * EMBED_DIM,
        out_dim: int = MAX_OBJECTS + 1,
        hidden: int = EMBED_DIM,
        shortcut_dims: tuple[int, int, int] = (256, 512, 1024),
    ) -> None:
        super().__init__()
        self.conv_in = ConvGN(in_dim, hidden, 1)
        self.conv_16x = ConvGN(hidden, hidden, 3)
        self.conv_8x = ConvGN(hidden, hidden // 2, 3)
        self.conv_4x = ConvGN(hidden // 2, hidden // 2, 3)
        self.adapter_16x = nn.Conv2d(shortcut_dims[2], hidden, 1)
        self.adapter_8x = nn.Conv2d(shortcut_dims[1], hidden, 1)
        self.adapter_4x = nn.Conv2d(shortcut_dims[0], hidden // 2, 1)
        self.conv_out = nn.Conv2d(hidden // 2, out_dim, 1)

    def forward(self, x: torch.Tensor, features: list[torch.Tensor]) -> torch.Tensor:
        """x (B, in_dim, h16, w16), features [s4, s8, s16] -> (B, out_dim, h4, w4)."""
        s4, s8, s16 = features
        x = F.relu(self.conv_in(x))
        x = F.relu(self.conv_16x(self.adapter_16x(s16) + x))
        x = F.interpolate(x, size=s8.shape[-2:], mode="bilinear", align_corners=True)
        x = F.relu(self.conv_8x(self.adapter_8x(s8) + x))
        x = F.interpolate(x, size=s4.shape[-2:], mode="bilinear", align_corners=True)
        x = F.relu(self.conv_4x(self.adapter_4x(s4) + x))
        return self.conv_out(x)


class DeAOT(nn.Module):
    """R50-DeAOT-L; state-dict keys equal the official checkpoint's (``module.`` stripped)."""

    def __init__(self, num_layers: int = 3) -> None:
        super().__init__()
        self.encoder = ResNet50Encoder()
        self.encoder_projector = nn.Conv2d(1024, EMBED_DIM, kernel_size=1)
        self.LSTT = DualBranchPropagation(num_layers, EMBED_DIM)
        self.decoder = FPNDecoder()
        self.patch_wise_id_bank = nn.Conv2d(MAX_OBJECTS + 1, EMBED_DIM, kernel_size=17, stride=16, padding=8)
        self.id_norm = nn.LayerNorm(EMBED_DIM)

    def encode_image(self, image: torch.Tensor) -> list[torch.Tensor]:
        """(B, 3, H, W) normalised -> [s4, s8, s16, s16 projected to 256 channels]."""
        s4, s8, s16 = self.encoder(image)
        return [s4, s8, s16, self.encoder_projector(s16)]

    def identity_embedding(self, one_hot: torch.Tensor) -> torch.Tensor:
        """(B, 11, H, W) one-hot ids -> (h16*w16, B, 256) identity embedding."""
        emb = self.patch_wise_id_bank(one_hot)  # b c h w
        emb = self.id_norm(emb.permute(2, 3, 0, 1)).permute(2, 3, 0, 1)
        return emb.flatten(2).permute(2, 0, 1)

    def propagate(
        self,
        features: list[torch.Tensor],
        long_term: list | None,
        short_term: list | None,
        id_emb: torch.Tensor | None,
    ) -> tuple[torch.Tensor, list]:
        """Propagation transformer on the projected stride-16 features (see ``DualBranchPropagation``)."""
        x = features[-1]
        size_2d = tuple(x.shape[-2:])
        return self.LSTT(x.flatten(2).permute(2, 0, 1), long_term, short_term, id_emb, size_2d)

    def decode(self, output: torch.Tensor, features: list[torch.Tensor]) -> torch.Tensor:
        """Propagation output (h16*w16, B, 512) -> (B, 11, h4, w4) identity logits."""
        b, _, h, w = features[-1].shape
        x = output.view(h, w, b, -1).permute(2, 3, 0, 1)
        return self.decoder(x, features[:3])


def load_deaot(path: Path | str) -> DeAOT:
    """The official ``R50_DeAOTL_PRE_YTB_DAV.pth`` (or any checkpoint of that model), strictly.

    The file's ``state_dict`` (or ``model``, or the file itself) with a DataParallel
    ``module.`` prefix removed must hold exactly this model's keys and shapes.

    Raises:
        IncompatibleModelError: keys missing, extra or of another shape.
    """
    checkpoint = load_checkpoint(path)
    if isinstance(checkpoint, dict) and "state_dict" not in checkpoint and "model" in checkpoint:
        checkpoint = checkpoint["model"]
    state = {k.removeprefix("module."): v for k, v in checkpoint_state_dict(checkpoint, path).items()}
    model = DeAOT()
    expected = model.state_dict()
    missing, extra = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
    shapes = [k for k in expected if k in state and state[k].shape != expected[k].shape]
    if missing or extra or shapes:
        raise IncompatibleModelError(
            f"{path} is not an R50-DeAOT-L checkpoint: {len(missing)} missing key(s) {missing[:3]}, "
            f"{len(extra)} unexpected {extra[:3]}, {len(shapes)} of another shape {shapes[:3]}"
        )
    model.load_state_dict(state, strict=True)
    return model.eval()
