"""Tiny random VC2 UNets whose TSM experts and routers are not zero, for benchmarks and cost tests.

Freshly injected experts contribute nothing (``B`` and the router start at zero), and LDM's
zero-initialised output layers would hide whatever they add; timing or counting such a model
would measure a path whose arithmetic never shows in the output. These helpers fill both with
seeded noise. Importable as ``tiny_models`` (benchmark scripts) and ``benchmarks.tiny_models``
(tests).
"""

from __future__ import annotations

import torch
from torch import nn

from tsm_video.models.vc2 import VC2UNet
from tsm_video.models.vc2.configs import VC2_TINY_ARCH
from tsm_video.tsm import tsm_layers

__all__ = ["tiny_vc2_unet", "randomise_adapters"]


def tiny_vc2_unet(seed: int = 0) -> VC2UNet:
    """``vc2-tiny``'s UNet in eval mode without gradients, random from ``seed``; the parameters
    LDM initialises to zero (``zero_module`` outputs) drawn from N(0, 0.02²) instead."""
    torch.manual_seed(seed)
    unet = VC2UNet.from_lvdm_config(VC2_TINY_ARCH["unet"]).eval().requires_grad_(False)
    with torch.no_grad():
        for p in unet.parameters():
            if not p.any():
                p.normal_(0.0, 0.02)
    return unet


def randomise_adapters(module: nn.Module, generator: torch.Generator, scale: float = 0.05) -> None:
    """Every parameter of ``module``'s TSM layers but the wrapped base layers (experts ``A`` and
    ``B`` of every scale, router ``FC`` and ``Emb``) ← ``scale`` · N(0, 1) drawn from ``generator``
    in the layers' order, then cast to the parameter's dtype."""
    with torch.no_grad():
        for _, layer in tsm_layers(module):
            for name, p in layer.named_parameters():
                if not name.startswith("base."):
                    p.copy_(torch.randn(p.shape, generator=generator) * scale)
