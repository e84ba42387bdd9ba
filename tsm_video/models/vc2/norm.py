"""Float32 GroupNorm: the one place VideoCrafter2's precision rule lives."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["GroupNorm32"]


class GroupNorm32(nn.GroupNorm):
    """GroupNorm computed in float32 and cast back to the input dtype.

    The official LVDM code normalises ResBlock inputs/outputs and the UNet's final ``out`` norm in
    float32 (``GroupNormSpecific``); every other GroupNorm of VC2 runs in the activation dtype and is a
    plain :class:`torch.nn.GroupNorm`. Weights are upcast too, so a bf16/fp16 model works without autocast.

    Shapes: ``(N, C, *)`` in, same shape and dtype out.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = None if self.weight is None else self.weight.float()
        bias = None if self.bias is None else self.bias.float()
        with torch.autocast(device_type=x.device.type, enabled=False):
            y = F.group_norm(x.float(), self.num_groups, weight, bias, self.eps)
        return y.to(x.dtype)
