"""Multi-head attention for the VC2 UNet: one kernel dispatcher and the checkpoint-named module.

The projections are plain ``nn.Linear`` children named as in the official checkpoint
(``to_q``, ``to_k``, ``to_v``, ``to_out.0``; ``to_k_ip``/``to_v_ip`` for image cross-attention;
``relative_position_k``/``relative_position_v`` tables), so strict loading and LoRA injection by name
work. The math lives in :func:`attention`, which picks the kernel:

* ``"sdpa"``: :func:`torch.nn.functional.scaled_dot_product_attention`;
* ``"xformers"``: ``xformers.ops.memory_efficient_attention`` (needs xformers and CUDA tensors);
* ``"math"``: einsum + softmax in the official order, the parity reference;
* ``"auto"`` (default): xformers when installed and the tensors are on CUDA, SDPA otherwise.

Relative-position attention needs the softmax probabilities, so it always runs the math path.
"""

from __future__ import annotations

import importlib.util

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "ATTENTION_BACKENDS",
    "CrossAttention",
    "RelativePosition",
    "attention",
    "check_backend",
    "xformers_available",
]

ATTENTION_BACKENDS = ("auto", "sdpa", "math", "xformers")


def xformers_available() -> bool:
    """Whether the optional ``xformers`` package is importable."""
    return importlib.util.find_spec("xformers") is not None


def check_backend(backend: str) -> str:
    """Validate a backend name (and that xformers is installed when asked for); return it."""
    if backend not in ATTENTION_BACKENDS:
        raise ValueError(f"unknown attention backend {backend!r}; choose one of {ATTENTION_BACKENDS}")
    if backend == "xformers" and not xformers_available():
        raise ValueError("attention backend 'xformers' requested but xformers is not installed")
    return backend


def attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    backend: str = "auto",
    causal: bool = False,
    rel_k: torch.Tensor | None = None,
    rel_v: torch.Tensor | None = None,
) -> torch.Tensor:
    """Scaled dot-product attention with scale ``d**-0.5``.

    Args:
        q: ``(B, H, Nq, D)``; k, v: ``(B, H, Nk, D)``.
        backend: one of :data:`ATTENTION_BACKENDS`.
        causal: mask key ``j > i`` (lower-triangular, aligned top-left as in the official ``tril`` mask).
        rel_k, rel_v: ``(Nq, Nk, D)`` relative-position embeddings added to the logits and the output
            (official ``RelativePosition``); forces the math path.

    Returns:
        ``(B, H, Nq, D)``.
    """
    if backend == "math" or rel_k is not None or rel_v is not None:
        return _math_attention(q, k, v, causal=causal, rel_k=rel_k, rel_v=rel_v)
    if backend == "auto":
        backend = "xformers" if q.is_cuda and xformers_available() else "sdpa"
    if backend == "sdpa":
        return F.scaled_dot_product_attention(q, k, v, is_causal=causal)
    if backend == "xformers":
        return _xformers_attention(q, k, v, causal=causal)
    raise ValueError(f"unknown attention backend {backend!r}; choose one of {ATTENTION_BACKENDS}")


def _math_attention(q, k, v, *, causal, rel_k, rel_v) -> torch.Tensor:
    """Reference path: the official einsum → (+relative logits) → mask → softmax → einsum order."""
    scale = q.shape[-1] ** -0.5
    sim = torch.einsum("bhid,bhjd->bhij", q, k) * scale  # (B, H, Nq, Nk)
    if rel_k is not None:
        sim = sim + torch.einsum("bhid,ijd->bhij", q, rel_k) * scale
    if causal:
        keep = torch.ones(sim.shape[-2:], dtype=torch.bool, device=sim.device).tril()
        sim = sim.masked_fill(~keep, torch.finfo(sim.dtype).min)
    probs = sim.softmax(dim=-1)
    out = torch.einsum("bhij,bhjd->bhid", probs, v)  # (B, H, Nq, D)
    if rel_v is not None:
        out = out + torch.einsum("bhij,ijd->bhid", probs, rel_v)
    return out


def _xformers_attention(q, k, v, *, causal) -> torch.Tensor:
    if not q.is_cuda:
        raise ValueError("attention backend 'xformers' needs CUDA tensors; use 'sdpa' or 'auto' on CPU")
    import xformers.ops as xops

    bias = xops.LowerTriangularMask() if causal else None
    # xformers wants (B, N, H, D)
    q, k, v = (t.transpose(1, 2) for t in (q, k, v))  # B N H D
    out = xops.memory_efficient_attention(q, k, v, attn_bias=bias)
    return out.transpose(1, 2)  # B H N D


class RelativePosition(nn.Module):
    """Learned embeddings of the clipped key-query distance (official ``RelativePosition``).

    ``embeddings_table``: ``(2 * max_relative_position + 1, num_units)``.
    """

    def __init__(self, num_units: int, max_relative_position: int, device=None, dtype=None) -> None:
        super().__init__()
        self.max_relative_position = max_relative_position
        table = torch.empty(2 * max_relative_position + 1, num_units, device=device, dtype=dtype)
        self.embeddings_table = nn.Parameter(nn.init.xavier_uniform_(table))

    def forward(self, length_q: int, length_k: int) -> torch.Tensor:
        """Return ``(length_q, length_k, num_units)`` embeddings of ``clamp(j - i)``."""
        device = self.embeddings_table.device
        distance = (
            torch.arange(length_k, device=device)[None, :] - torch.arange(length_q, device=device)[:, None]
        )
        index = (
            distance.clamp(-self.max_relative_position, self.max_relative_position)
            + self.max_relative_position
        )
        return self.embeddings_table[index]


class CrossAttention(nn.Module):
    """Multi-head (cross-)attention with the official ``CrossAttention`` parameter names.

    Args:
        query_dim: channels of the query tokens.
        context_dim: channels of the key/value tokens; ``None`` → self-attention width (``query_dim``).
        heads, dim_head: inner width is ``heads * dim_head``.
        relative_position_length: if set, add learned relative-position terms clipped at this distance.
        image_cross_attention: also attend (same queries) to context tokens after the first
            :attr:`TEXT_CONTEXT_LEN` through ``to_k_ip``/``to_v_ip``, and add that output (scale 1).
    """

    TEXT_CONTEXT_LEN = 77
    IMAGE_CROSS_ATTENTION_SCALE = 1.0

    def __init__(
        self,
        query_dim: int,
        context_dim: int | None = None,
        heads: int = 8,
        dim_head: int = 64,
        *,
        relative_position_length: int | None = None,
        image_cross_attention: bool = False,
        device=None,
        dtype=None,
    ) -> None:
        super().__init__()
        dd = {"device": device, "dtype": dtype}
        inner_dim = heads * dim_head
        context_dim = query_dim if context_dim is None else context_dim
        self.heads = heads
        self.dim_head = dim_head
        self.backend = "auto"
        self.to_q = nn.Linear(query_dim, inner_dim, bias=False, **dd)
        self.to_k = nn.Linear(context_dim, inner_dim, bias=False, **dd)
        self.to_v = nn.Linear(context_dim, inner_dim, bias=False, **dd)
        self.to_out = nn.Sequential(nn.Linear(inner_dim, query_dim, **dd))
        self.image_cross_attention = image_cross_attention
        if image_cross_attention:
            self.to_k_ip = nn.Linear(context_dim, inner_dim, bias=False, **dd)
            self.to_v_ip = nn.Linear(context_dim, inner_dim, bias=False, **dd)
        self.relative_position = relative_position_length is not None
        if self.relative_position:
            self.relative_position_k = RelativePosition(dim_head, relative_position_length, **dd)
            self.relative_position_v = RelativePosition(dim_head, relative_position_length, **dd)

    def _heads(self, t: torch.Tensor) -> torch.Tensor:
        n, length, _ = t.shape
        return t.view(n, length, self.heads, self.dim_head).transpose(1, 2)  # n h l d

    def forward(
        self, x: torch.Tensor, context: torch.Tensor | None = None, causal: bool = False
    ) -> torch.Tensor:
        """x: ``(N, Nq, query_dim)``; context: ``(N, Nk, context_dim)`` or ``None`` (self-attention).

        Returns ``(N, Nq, query_dim)``.
        """
        n, length_q, _ = x.shape
        image_context = None
        if context is None:
            context = x
        elif self.image_cross_attention:
            context, image_context = context[:, : self.TEXT_CONTEXT_LEN], context[:, self.TEXT_CONTEXT_LEN :]
        q = self._heads(self.to_q(x))  # n h lq d
        k = self._heads(self.to_k(context))  # n h lk d
        v = self._heads(self.to_v(context))  # n h lk d
        rel_k = rel_v = None
        if self.relative_position:
            rel_k = self.relative_position_k(length_q, k.shape[2])
            rel_v = self.relative_position_v(length_q, v.shape[2])
        out = attention(q, k, v, backend=self.backend, causal=causal, rel_k=rel_k, rel_v=rel_v)
        if image_context is not None:
            k_ip = self._heads(self.to_k_ip(image_context))  # n h li d
            v_ip = self._heads(self.to_v_ip(image_context))  # n h li d
            out = out + self.IMAGE_CROSS_ATTENTION_SCALE * attention(q, k_ip, v_ip, backend=self.backend)
        out = out.transpose(1, 2).reshape(n, length_q, self.heads * self.dim_head)  # n lq (h d)
        return self.to_out(out)
