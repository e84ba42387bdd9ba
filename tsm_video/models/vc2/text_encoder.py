"""VideoCrafter2's text encoder: the OpenCLIP ViT-H-14 text tower, read at its penultimate layer.

Equal to LVDM's ``FrozenOpenCLIPEmbedder(layer="penultimate")``: token + positional embedding,
every residual block but the last (causal self-attention), then ``ln_final``; no projection; all
77 positions are returned. State-dict keys equal open_clip's CLIP text keys (a VC2 checkpoint
stores them under ``cond_stage_model.model.``), including the unused ``text_projection``,
``logit_scale`` and last block, so a checkpoint loads strictly.

The attention is written here instead of using ``nn.MultiheadAttention``, whose forward reads
``out_proj.weight`` directly and so bypasses a wrapped ``out_proj``: our ``out_proj`` is a plain
``nn.Linear`` child that the forward calls, so a LoRA on it changes the output and trains. Only
open_clip's tokenizer is used (any open_clip version); the model never runs through open_clip.
"""

from __future__ import annotations

import functools
import importlib.util
import math
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["VC2TextEncoder", "TextAttention", "TextResidualBlock", "tokenize", "LAYERS"]

LAYERS = {"last": 0, "penultimate": 1}  # number of final blocks skipped


@functools.cache
def _open_clip_tokenizer() -> ModuleType:
    """open_clip's ``tokenizer`` module, loaded alone when it can be.

    Importing the ``open_clip`` package pulls in timm and its model zoo (seconds to tens of
    seconds); its ``tokenizer.py`` needs none of that. Versions whose tokenizer imports package
    siblings fall back to the full import.
    """
    spec = importlib.util.find_spec("open_clip")
    if spec is None or spec.origin is None:
        raise ImportError("open_clip_torch is required for the VC2 tokenizer: pip install open_clip_torch")
    file_spec = importlib.util.spec_from_file_location(
        "_vc2_open_clip_tokenizer", Path(spec.origin).parent / "tokenizer.py"
    )
    module = importlib.util.module_from_spec(file_spec)
    try:
        file_spec.loader.exec_module(module)
    except ImportError:  # relative imports: needs the package
        import open_clip.tokenizer as module
    return module


def tokenize(prompts: Sequence[str], context_length: int = 77) -> torch.Tensor:
    """open_clip's BPE tokens (B, context_length) long: sot 49406, …, eot 49407, padded with 0."""
    if isinstance(prompts, str):
        raise TypeError("prompts must be a list of strings, not a single string")
    return _open_clip_tokenizer().tokenize(list(prompts), context_length=context_length)


class LayerNorm(nn.LayerNorm):
    """LayerNorm computed in float32 and cast back (open_clip's half-precision behaviour)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = None if self.weight is None else self.weight.float()
        bias = None if self.bias is None else self.bias.float()
        return F.layer_norm(x.float(), self.normalized_shape, weight, bias, self.eps).to(x.dtype)


class TextAttention(nn.Module):
    """Causal multi-head self-attention with open_clip's parameter names.

    ``in_proj_weight`` (3D, D) / ``in_proj_bias`` (3D,) pack q, k, v as in ``nn.MultiheadAttention``;
    ``out_proj`` is an ``nn.Linear`` the forward calls (a LoRA target).
    """

    def __init__(self, width: int, heads: int, device=None, dtype=None) -> None:
        super().__init__()
        if width % heads:
            raise ValueError(f"text width {width} is not divisible by heads {heads}")
        dd = {"device": device, "dtype": dtype}
        self.heads = heads
        self.in_proj_weight = nn.Parameter(torch.empty(3 * width, width, **dd))
        self.in_proj_bias = nn.Parameter(torch.empty(3 * width, **dd))
        self.out_proj = nn.Linear(width, width, **dd)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, L, D) → (B, L, D), causal (position i attends to positions ≤ i)."""
        b, length, width = x.shape
        qkv = F.linear(x, self.in_proj_weight, self.in_proj_bias)  # (B, L, 3D)
        q, k, v = qkv.view(b, length, 3, self.heads, width // self.heads).permute(2, 0, 3, 1, 4)  # 3 B H L d
        out = F.scaled_dot_product_attention(q, k, v, is_causal=True)  # (B, H, L, d)
        out = out.transpose(1, 2).reshape(b, length, width)  # (B, L, H*d)
        return self.out_proj(out)


class TextMLP(nn.Module):
    """``c_fc`` → exact GELU → ``c_proj`` (ViT-H-14 does not use QuickGELU)."""

    def __init__(self, width: int, hidden: int, device=None, dtype=None) -> None:
        super().__init__()
        self.c_fc = nn.Linear(width, hidden, device=device, dtype=dtype)
        self.c_proj = nn.Linear(hidden, width, device=device, dtype=dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.c_proj(F.gelu(self.c_fc(x)))


class TextResidualBlock(nn.Module):
    """Pre-norm transformer block: ``x + attn(ln_1(x))``, then ``x + mlp(ln_2(x))``."""

    def __init__(self, width: int, heads: int, mlp_ratio: float = 4.0, device=None, dtype=None) -> None:
        super().__init__()
        dd = {"device": device, "dtype": dtype}
        self.ln_1 = LayerNorm(width, **dd)
        self.attn = TextAttention(width, heads, **dd)
        self.ln_2 = LayerNorm(width, **dd)
        self.mlp = TextMLP(width, int(width * mlp_ratio), **dd)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class _Transformer(nn.Module):
    """Holds ``resblocks`` so keys read ``transformer.resblocks.N.*`` as in open_clip."""

    def __init__(self, width: int, heads: int, layers: int, device=None, dtype=None) -> None:
        super().__init__()
        self.resblocks = nn.ModuleList(
            TextResidualBlock(width, heads, device=device, dtype=dtype) for _ in range(layers)
        )


class VC2TextEncoder(nn.Module):
    """OpenCLIP text tower returning the ``layer`` hidden states (B, context_length, width).

    Args:
        width, heads, layers: transformer size (ViT-H-14: 1024, 16, 24).
        context_length, vocab_size: 77 and 49408 for every OpenCLIP model.
        embed_dim: width of the (unused) ``text_projection`` (ViT-H-14: 1024).
        layer: ``"penultimate"`` (VC2) or ``"last"``.
    """

    def __init__(
        self,
        width: int = 1024,
        heads: int = 16,
        layers: int = 24,
        context_length: int = 77,
        vocab_size: int = 49408,
        embed_dim: int = 1024,
        layer: str = "penultimate",
        device=None,
        dtype=None,
    ) -> None:
        super().__init__()
        if layer not in LAYERS:
            raise ValueError(f"layer must be one of {sorted(LAYERS)}, got {layer!r}")
        if layers <= LAYERS[layer]:
            raise ValueError(f"layer={layer!r} needs more than {LAYERS[layer]} blocks, got layers={layers}")
        dd = {"device": device, "dtype": dtype}
        self.config: dict[str, Any] = {
            "width": width,
            "heads": heads,
            "layers": layers,
            "context_length": context_length,
            "vocab_size": vocab_size,
            "embed_dim": embed_dim,
            "layer": layer,
        }
        self.layer = layer
        self.context_length = context_length
        self.token_embedding = nn.Embedding(vocab_size, width, **dd)
        self.positional_embedding = nn.Parameter(torch.empty(context_length, width, **dd))
        self.transformer = _Transformer(width, heads, layers, **dd)
        self.ln_final = LayerNorm(width, **dd)
        self.text_projection = nn.Parameter(torch.empty(width, embed_dim, **dd))
        self.logit_scale = nn.Parameter(torch.empty((), **dd))
        self.reset_parameters()

    @classmethod
    def from_config(cls, config: dict[str, Any], device=None, dtype=None) -> VC2TextEncoder:
        """Build from a dict with this class's constructor keys (unknown keys raise)."""
        return cls(**config, device=device, dtype=dtype)

    def reset_parameters(self) -> None:
        """OpenCLIP's text-tower initialisation (normal, std scaled by width and depth)."""
        width, layers = self.config["width"], self.config["layers"]
        attn_std, proj_std, fc_std = width**-0.5, width**-0.5 * (2 * layers) ** -0.5, (2 * width) ** -0.5
        nn.init.normal_(self.token_embedding.weight, std=0.02)
        nn.init.normal_(self.positional_embedding, std=0.01)
        for block in self.transformer.resblocks:
            nn.init.normal_(block.attn.in_proj_weight, std=attn_std)
            nn.init.zeros_(block.attn.in_proj_bias)
            nn.init.normal_(block.attn.out_proj.weight, std=proj_std)
            nn.init.zeros_(block.attn.out_proj.bias)
            nn.init.normal_(block.mlp.c_fc.weight, std=fc_std)
            nn.init.normal_(block.mlp.c_proj.weight, std=proj_std)
        nn.init.normal_(self.text_projection, std=width**-0.5)
        nn.init.constant_(self.logit_scale, math.log(1 / 0.07))

    def tokenize(self, prompts: Sequence[str]) -> torch.Tensor:
        """(B, context_length) long tokens on this module's device."""
        return tokenize(prompts, self.context_length).to(self.positional_embedding.device)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens (B, L) long → hidden states (B, L, width) after ``ln_final``."""
        if tokens.dim() != 2 or tokens.shape[1] != self.context_length:
            raise ValueError(f"tokens must be (B, {self.context_length}), got {tuple(tokens.shape)}")
        x = self.token_embedding(tokens) + self.positional_embedding  # (B, L, D)
        blocks = self.transformer.resblocks
        for block in blocks[: len(blocks) - LAYERS[self.layer]]:
            x = block(x)
        return self.ln_final(x)

    def encode(self, prompts: Sequence[str]) -> torch.Tensor:
        """Prompts → (B, context_length, width) text context for the UNet's cross-attention."""
        return self(self.tokenize(prompts))

    def running_modules(self, suffixes: Sequence[str]) -> list[str]:
        """Names of the modules matching ``suffixes`` (``name == s`` or ``name.endswith("." + s)``)
        whose output reaches the context: the blocks skipped by ``layer`` (VC2: the last one)
        never run, so a LoRA there would never get a gradient (and DDP refuses such parameters)."""
        used = len(self.transformer.resblocks) - LAYERS[self.layer]
        names = []
        for name, _ in self.named_modules():
            if any(name == s or name.endswith("." + s) for s in suffixes):
                parts = name.split(".")
                block = int(parts[2]) if name.startswith("transformer.resblocks.") else -1
                if block < used:
                    names.append(name)
        return names
