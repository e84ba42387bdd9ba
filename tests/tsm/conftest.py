"""Shared fixture for the TSM tests: push adapters off their zero init."""

import pytest
import torch
from torch import nn


def _perturb(module: nn.Module, seed: int = 0, scale: float = 0.5) -> None:
    """Fill every ``lora_B`` bank and router parameter with seeded noise (zero at init otherwise)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            if "lora_B" in name or "router" in name:
                p.copy_(torch.randn(p.shape, generator=gen) * scale)


@pytest.fixture
def perturb():
    return _perturb
