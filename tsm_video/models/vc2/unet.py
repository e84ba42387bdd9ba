"""VideoCrafter2's 3D UNet, natively: official parameter names, SDPA attention, checkpointing, bf16-safe.

Build it from the LVDM ``unet_config.params`` dict (:func:`VC2UNet.from_lvdm_config`); its state dict
has exactly the official keys without the ``model.diffusion_model.`` prefix (``temopral_conv`` and
``init_attn``'s Conv1d projections included), so an official checkpoint loads strictly.

Layout invariant (TSM layers rely on it): frames are folded into the batch with the **batch
outermost**. Spatial layers see ``(b f) ...``; temporal attention sees ``(b h w) f c``; the
timestep/fps embedding and the text context are ``repeat_interleave``'d over frames. A layer that
receives ``N`` rows and per-sample timesteps ``(B,)`` expands them with ``repeat_interleave(N // B)``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from tsm_video.models.vc2.attention import CrossAttention, check_backend
from tsm_video.models.vc2.blocks import Downsample, ResBlock, Upsample, zero_init
from tsm_video.models.vc2.embeddings import embedding_mlp, timestep_embedding
from tsm_video.models.vc2.norm import GroupNorm32
from tsm_video.models.vc2.transformer import BasicTransformerBlock, SpatialTransformer, TemporalTransformer
from tsm_video.models.vc2.unet_config import VC2_UNET_PARAMS, resolve_unet_params

__all__ = ["VC2_UNET_PARAMS", "UNetStage", "VC2UNet"]


class UNetStage(nn.Sequential):
    """One entry of ``input_blocks``/``middle_block``/``output_blocks`` (LVDM's ``TimestepEmbedSequential``).

    Each child gets what it needs: ResBlocks the embedding, spatial transformers the frame-repeated
    context, temporal transformers the per-sample context; other layers (convs, resamplers) only ``h``.
    Shapes: h ``(b f) c h w`` in and out.
    """

    def forward(
        self,
        h: torch.Tensor,
        emb: torch.Tensor,
        frame_context: torch.Tensor,
        context: torch.Tensor,
        num_frames: int,
    ) -> torch.Tensor:
        for layer in self:
            if isinstance(layer, ResBlock):
                h = layer(h, emb, num_frames)
            elif isinstance(layer, SpatialTransformer):
                h = layer(h, frame_context)
            elif isinstance(layer, TemporalTransformer):
                h = layer(h, context, num_frames)
            else:
                h = layer(h)
        return h


class VC2UNet(nn.Module):
    """The VideoCrafter2 (LVDM ``openaimodel3d.UNetModel``) noise predictor.

    Args:
        device, dtype: where and in which dtype to create parameters (``"meta"`` builds for free).
        **params: LVDM ``unet_config.params`` (defaults: ``unet_config.LVDM_UNET_DEFAULTS``), validated
            by :func:`~tsm_video.models.vc2.unet_config.resolve_unet_params`. The complete
            resolved dict is kept as :attr:`config`; ``VC2UNet(**unet.config)`` rebuilds the model.
            ``use_checkpoint`` turns on activation checkpointing.
    """

    def __init__(self, *, device=None, dtype=None, **params: Any) -> None:
        super().__init__()
        cfg = resolve_unet_params(params)
        self.config = cfg
        dd = {"device": device, "dtype": dtype}
        mc, time_dim = cfg["model_channels"], cfg["model_channels"] * 4
        self.model_channels = mc
        self.fps_cond = cfg["fps_cond"]
        self.addition_attention = cfg["addition_attention"]
        self.num_levels = len(cfg["channel_mult"])

        # 1. timestep and fps embeddings
        self.time_embed = embedding_mlp(mc, time_dim, **dd)
        if self.fps_cond:
            self.fps_embedding = embedding_mlp(mc, time_dim, **dd)

        # 2. encoder: conv_in, init_attn, then per level ResBlocks (+ attention) and a downsample
        self.input_blocks = nn.ModuleList([UNetStage(nn.Conv2d(cfg["in_channels"], mc, 3, padding=1, **dd))])
        if self.addition_attention:
            init_attn = self._temporal(
                mc, 8, cfg["num_head_channels"], cfg["transformer_depth"], use_linear=False
            )
            self.init_attn = UNetStage(init_attn)
        skip_channels, ch, ds = [mc], mc, 1
        for level, mult in enumerate(cfg["channel_mult"]):
            for _ in range(cfg["num_res_blocks"]):
                layers = [self._resblock(ch, mult * mc)]
                ch = mult * mc
                if ds in cfg["attention_resolutions"]:
                    layers += self._attention(ch)
                self.input_blocks.append(UNetStage(*layers))
                skip_channels.append(ch)
            if level != self.num_levels - 1:
                if cfg["resblock_updown"]:
                    down = ResBlock(ch, time_dim, cfg["dropout"], ch, down=True, **self._res_kwargs(False))
                else:
                    down = Downsample(ch, cfg["conv_resample"], ch, **dd)
                self.input_blocks.append(UNetStage(down))
                skip_channels.append(ch)
                ds *= 2

        # 3. middle: ResBlock, attention, ResBlock
        self.middle_block = UNetStage(self._resblock(ch, ch), *self._attention(ch), self._resblock(ch, ch))

        # 4. decoder: per level (reversed) ResBlocks on [h, skip] (+ attention), then an upsample
        self.output_blocks = nn.ModuleList()
        for level, mult in reversed(list(enumerate(cfg["channel_mult"]))):
            for i in range(cfg["num_res_blocks"] + 1):
                layers = [self._resblock(ch + skip_channels.pop(), mult * mc)]
                ch = mult * mc
                if ds in cfg["attention_resolutions"]:
                    layers += self._attention(ch)
                if level and i == cfg["num_res_blocks"]:
                    if cfg["resblock_updown"]:
                        layers.append(
                            ResBlock(ch, time_dim, cfg["dropout"], ch, up=True, **self._res_kwargs(False))
                        )
                    else:
                        layers.append(Upsample(ch, cfg["conv_resample"], ch, **dd))
                    ds //= 2
                self.output_blocks.append(UNetStage(*layers))

        # 5. output head
        self.out = nn.Sequential(
            GroupNorm32(32, ch, **dd),
            nn.SiLU(),
            zero_init(nn.Conv2d(mc, cfg["out_channels"], 3, padding=1, **dd)),
        )
        if cfg["use_checkpoint"]:
            self.enable_gradient_checkpointing()

    # ---- construction helpers -------------------------------------------------------------------
    @property
    def _dd(self) -> dict[str, Any]:
        p = self.time_embed[0].weight
        return {"device": p.device, "dtype": p.dtype}

    def _res_kwargs(self, temporal_conv: bool) -> dict[str, Any]:
        cfg = self.config
        return {
            "use_scale_shift_norm": cfg["use_scale_shift_norm"],
            "use_temporal_conv": temporal_conv,
            "tempspatial_aware": cfg["tempspatial_aware"],
            **self._dd,
        }

    def _resblock(self, channels: int, out_channels: int) -> ResBlock:
        cfg = self.config
        return ResBlock(
            channels,
            4 * self.model_channels,
            cfg["dropout"],
            out_channels,
            **self._res_kwargs(cfg["temporal_conv"]),
        )

    def _heads(self, channels: int) -> tuple[int, int]:
        """(number of heads, head width) at a given width: fixed head width wins over a fixed count."""
        head_channels = self.config["num_head_channels"]
        if head_channels == -1:
            heads = self.config["num_heads"]
            return heads, channels // heads
        return channels // head_channels, head_channels

    def _temporal(
        self, channels: int, heads: int, d_head: int, depth: int, use_linear: bool
    ) -> TemporalTransformer:
        cfg = self.config
        relative = cfg["temporal_length"] if cfg["use_relative_position"] else None
        return TemporalTransformer(
            channels,
            heads,
            d_head,
            depth,
            cfg["context_dim"],
            use_linear=use_linear,
            only_self_att=cfg["temporal_selfatt_only"],
            causal=cfg["use_causal_attention"],
            relative_position_length=relative,
            **self._dd,
        )

    def _attention(self, channels: int) -> list[nn.Module]:
        """SpatialTransformer (+ TemporalTransformer when ``temporal_attention``) at one width."""
        cfg = self.config
        heads, d_head = self._heads(channels)
        layers: list[nn.Module] = [
            SpatialTransformer(
                channels,
                heads,
                d_head,
                cfg["transformer_depth"],
                cfg["context_dim"],
                use_linear=cfg["use_linear"],
                image_cross_attention=cfg["use_image_attention"],
                **self._dd,
            )
        ]
        if cfg["temporal_attention"]:
            layers.append(
                self._temporal(channels, heads, d_head, cfg["temporal_transformer_depth"], cfg["use_linear"])
            )
        return layers

    # ---- public API -------------------------------------------------------------------------------
    @classmethod
    def from_lvdm_config(cls, params: Mapping[str, Any], device=None, dtype=None) -> VC2UNet:
        """Build from an LVDM ``unet_config.params`` dict (e.g. :data:`VC2_UNET_PARAMS`)."""
        if not isinstance(params, Mapping):
            raise ValueError(f"unet params must be a mapping, got {type(params).__name__}")
        return cls(device=device, dtype=dtype, **params)

    def set_gradient_checkpointing(self, enabled: bool) -> None:
        """Checkpoint every ResBlock and transformer block (as LVDM's ``use_checkpoint``)."""
        for module in self.modules():
            if isinstance(module, (ResBlock, BasicTransformerBlock)):
                module.gradient_checkpointing = enabled

    def enable_gradient_checkpointing(self) -> None:
        self.set_gradient_checkpointing(True)

    def disable_gradient_checkpointing(self) -> None:
        self.set_gradient_checkpointing(False)

    def set_attention_backend(self, backend: str) -> None:
        """Pick every attention's kernel: ``"auto"``, ``"sdpa"``, ``"math"`` or ``"xformers"``."""
        check_backend(backend)
        for module in self.modules():
            if isinstance(module, CrossAttention):
                module.backend = backend

    def _check_inputs(self, x, timesteps, context, fps) -> torch.Tensor | None:
        cfg = self.config
        if x.ndim != 5 or x.shape[1] != cfg["in_channels"]:
            raise ValueError(f"x must be (B, {cfg['in_channels']}, T, H, W), got {tuple(x.shape)}")
        b, _, _, height, width = x.shape
        factor = 2 ** (self.num_levels - 1)
        if height % factor or width % factor:
            raise ValueError(f"H and W must be multiples of {factor} for this UNet, got {height}x{width}")
        if timesteps.shape != (b,):
            raise ValueError(f"timesteps must be (B,) = ({b},), got {tuple(timesteps.shape)}")
        if context.ndim != 3 or context.shape[0] != b or context.shape[2] != cfg["context_dim"]:
            raise ValueError(f"context must be ({b}, L, {cfg['context_dim']}), got {tuple(context.shape)}")
        text_length = CrossAttention.TEXT_CONTEXT_LEN
        if cfg["use_image_attention"] and context.shape[1] <= text_length:
            raise ValueError(
                f"use_image_attention: context must hold {text_length} text tokens followed by image tokens, "
                f"got length {context.shape[1]}"
            )
        if not self.fps_cond:
            return None
        if fps is None:
            raise ValueError(
                "this UNet is fps-conditioned (fps_cond=True): pass fps, an int or a (B,) tensor"
            )
        if isinstance(fps, int):
            return torch.full_like(timesteps, fps)
        if fps.shape != (b,):
            raise ValueError(f"fps must be (B,) = ({b},), got {tuple(fps.shape)}")
        return fps

    def forward(
        self,
        x: torch.Tensor,
        timesteps: torch.Tensor,
        context: torch.Tensor,
        fps: torch.Tensor | int | None = None,
    ) -> torch.Tensor:
        """Predict the noise.

        Args:
            x: ``(B, C, T, H, W)`` noisy latents.
            timesteps: ``(B,)`` integer timesteps (one per sample; a batch may mix them).
            context: ``(B, L, context_dim)`` text embeddings.
            fps: ``(B,)`` frame rates (or one int), required when ``fps_cond``; ignored otherwise.

        Returns:
            ``(B, out_channels, T, H, W)`` predicted noise, in ``x``'s dtype.
        """
        fps = self._check_inputs(x, timesteps, context, fps)
        b, c, f, height, width = x.shape

        # 1. time (+ fps) embedding per sample, then repeated over frames (batch outermost)
        weight_dtype = self.time_embed[0].weight.dtype  # sinusoids are float32; bf16/fp16 weights need a cast
        emb = self.time_embed(timestep_embedding(timesteps, self.model_channels).to(weight_dtype))  # b E
        if fps is not None:
            emb = emb + self.fps_embedding(timestep_embedding(fps, self.model_channels).to(weight_dtype))
        emb = emb.repeat_interleave(f, dim=0)  # (b f) E
        frame_context = context.repeat_interleave(f, dim=0)  # (b f) L D

        # 2. fold frames into the batch
        h = x.transpose(1, 2).reshape(b * f, c, height, width)  # (b f) c h w
        stage_args = (emb, frame_context, context, f)

        # 3. encoder (init_attn right after conv_in; its output is the first skip)
        skips = []
        for index, stage in enumerate(self.input_blocks):
            h = stage(h, *stage_args)
            if index == 0 and self.addition_attention:
                h = self.init_attn(h, *stage_args)
            skips.append(h)

        # 4. middle
        h = self.middle_block(h, *stage_args)

        # 5. decoder on [h, skip]
        for stage in self.output_blocks:
            h = stage(torch.cat([h, skips.pop()], dim=1), *stage_args)

        # 6. output head, unfold frames
        y = self.out(h.type(x.dtype))  # (b f) c h w
        return y.view(b, f, -1, height, width).transpose(1, 2).contiguous()  # b c f h w
