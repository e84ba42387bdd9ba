"""The timestep-aware router ``g(x, t) = act(FC(x) + Emb(t))`` that weighs experts per token."""

from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = ["Router", "GATE_ACTIVATIONS"]

GATE_ACTIVATIONS = ("none", "softmax", "sigmoid")


class Router(nn.Module):
    """Per-token gates over ``G`` experts from the layer's own input and the sample's timestep.

    ``fc`` maps the layer input to ``G`` channels token by token (``nn.Linear(in, G)`` for a
    linear layer; a conv with the base conv's geometry for a conv layer, so gates live on the
    output grid). ``Emb`` is a ``T × G`` table. Both start at zero.

    ``centred=True`` (asymmetric TSM) subtracts the activation's value at zero, so gates are
    exactly 0 at init for every activation and stage 2 starts exactly at the core expert:
    ``none`` → ``z``; ``sigmoid`` → ``σ(z) − ½``; ``softmax`` → ``softmax(z) − 1/G`` (gates
    redistribute weight among context experts and sum to 0; needs ``G ≥ 2``).
    ``centred=False`` (symmetric MoE ablation) uses the raw activation.
    """

    def __init__(
        self,
        fc: nn.Module,
        num_timesteps: int,
        num_gates: int,
        activation: str = "none",
        centred: bool = True,
        channel_dim: int = -1,
    ) -> None:
        super().__init__()
        if activation not in GATE_ACTIVATIONS:
            raise ValueError(f"unknown gate activation {activation!r}; valid: {', '.join(GATE_ACTIVATIONS)}")
        if activation == "softmax" and centred and num_gates < 2:
            raise ValueError("a centred softmax over one context expert is constant; use 'none' or 'sigmoid'")
        self.fc = fc
        self.emb = nn.Embedding(num_timesteps, num_gates, device=fc.weight.device, dtype=fc.weight.dtype)
        nn.init.zeros_(self.fc.weight)
        nn.init.zeros_(self.emb.weight)
        self.activation, self.centred, self.channel_dim = activation, centred, channel_dim

    def forward(self, x: Tensor, t_index: Tensor) -> Tensor:
        """Gates for input ``x`` (N, ...) whose rows fold per-sample timesteps ``t_index`` (B,).

        Returns ``fc(x)``'s layout with ``G`` channels: (N, ..., G) for linear, (N, G, *S) for conv.
        """
        return self.activate(self.fc(x), t_index)

    def activate(self, z: Tensor, t_index: Tensor) -> Tensor:
        """Gates from precomputed logits ``z = fc(x)`` (N, ..., G) or (N, G, *S), N a multiple of B."""
        n, b = z.shape[0], t_index.shape[0]
        e = self.emb(t_index).repeat_interleave(n // b, dim=0)  # (N, G), batch outermost
        ones = [1] * (z.ndim - 2)
        z = z + (e.view(n, *ones, -1) if self.channel_dim == -1 else e.view(n, -1, *ones))
        return self.gate(z)

    def gate(self, z: Tensor, dim: int | None = None) -> Tensor:
        """The activation alone on ``z = FC(x) + Emb(t)``, gates on axis ``dim`` (default
        ``channel_dim``; only softmax mixes across it)."""
        if self.activation == "sigmoid":
            return torch.sigmoid(z) - 0.5 if self.centred else torch.sigmoid(z)
        if self.activation == "softmax":
            dim = self.channel_dim if dim is None else dim
            g = torch.softmax(z, dim=dim)
            return g - 1.0 / z.shape[dim] if self.centred else g
        return z

    def extra_repr(self) -> str:
        return f"gates={self.emb.embedding_dim}, activation={self.activation}, centred={self.centred}"
