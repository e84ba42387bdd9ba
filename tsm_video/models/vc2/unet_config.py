"""The LVDM ``unet_config.params`` of VideoCrafter2: defaults, validation, and the real 512 config.

:func:`resolve_unet_params` turns a user/YAML dict into the complete, JSON-able parameter dict the
:class:`~tsm_video.models.vc2.unet.VC2UNet` is built from (and stores as ``config``), raising a
``ValueError`` that names the offending key for anything unknown, mistyped or inconsistent.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

__all__ = ["LVDM_UNET_DEFAULTS", "LVDM_UNET_REQUIRED", "VC2_UNET_PARAMS", "resolve_unet_params"]

#: ``model.params.unet_config.params`` of VideoCrafter2's ``configs/inference_t2v_512_v2.0.yaml``
#: (1,413,284,420 parameters, 1484 state-dict keys under ``model.diffusion_model.``).
VC2_UNET_PARAMS: dict[str, Any] = {
    "in_channels": 4,
    "out_channels": 4,
    "model_channels": 320,
    "attention_resolutions": [4, 2, 1],
    "num_res_blocks": 2,
    "channel_mult": [1, 2, 4, 4],
    "num_head_channels": 64,
    "transformer_depth": 1,
    "context_dim": 1024,
    "use_linear": True,
    "use_checkpoint": True,
    "temporal_conv": True,
    "temporal_attention": True,
    "temporal_selfatt_only": True,
    "use_relative_position": False,
    "use_causal_attention": False,
    "temporal_length": 16,
    "addition_attention": True,
    "fps_cond": True,
}

#: Keys without a default in the official ``UNetModel.__init__``.
LVDM_UNET_REQUIRED = (
    "in_channels",
    "model_channels",
    "out_channels",
    "num_res_blocks",
    "attention_resolutions",
)

#: The official ``UNetModel.__init__`` defaults (``lvdm/modules/networks/openaimodel3d.py``).
LVDM_UNET_DEFAULTS: dict[str, Any] = {
    "dropout": 0.0,
    "channel_mult": [1, 2, 4, 8],
    "conv_resample": True,
    "dims": 2,
    "context_dim": None,
    "use_scale_shift_norm": False,
    "resblock_updown": False,
    "num_heads": -1,
    "num_head_channels": -1,
    "transformer_depth": 1,
    "use_linear": False,
    "use_checkpoint": False,
    "temporal_conv": False,
    "tempspatial_aware": False,
    "temporal_attention": True,
    "temporal_selfatt_only": True,
    "use_relative_position": True,
    "use_causal_attention": False,
    "temporal_length": None,
    "use_fp16": False,
    "addition_attention": False,
    "use_image_attention": False,
    "temporal_transformer_depth": 1,
    "fps_cond": False,
}

_INT_KEYS = (
    "in_channels",
    "model_channels",
    "out_channels",
    "num_res_blocks",
    "dims",
    "num_heads",
    "num_head_channels",
    "transformer_depth",
    "temporal_transformer_depth",
)
_INT_LIST_KEYS = ("attention_resolutions", "channel_mult")
_BOOL_KEYS = (
    "conv_resample",
    "use_scale_shift_norm",
    "resblock_updown",
    "use_linear",
    "use_checkpoint",
    "temporal_conv",
    "tempspatial_aware",
    "temporal_attention",
    "temporal_selfatt_only",
    "use_relative_position",
    "use_causal_attention",
    "use_fp16",
    "addition_attention",
    "use_image_attention",
    "fps_cond",
)
_GROUPS = 32  # every GroupNorm of the UNet has 32 groups


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_types(cfg: dict[str, Any]) -> None:
    for key in _INT_KEYS:
        if not _is_int(cfg[key]):
            raise ValueError(f"unet param {key!r} must be an int, got {cfg[key]!r}")
    for key in _BOOL_KEYS:
        if not isinstance(cfg[key], bool):
            raise ValueError(f"unet param {key!r} must be true/false, got {cfg[key]!r}")
    for key in _INT_LIST_KEYS:
        value = cfg[key]
        if not isinstance(value, (list, tuple)) or not all(_is_int(v) and v > 0 for v in value):
            raise ValueError(f"unet param {key!r} must be a list of positive ints, got {value!r}")
        cfg[key] = list(value)
    if isinstance(cfg["dropout"], bool) or not isinstance(cfg["dropout"], (int, float)):
        raise ValueError(f"unet param 'dropout' must be a number in [0, 1), got {cfg['dropout']!r}")
    cfg["dropout"] = float(cfg["dropout"])
    for key in ("context_dim", "temporal_length"):
        if cfg[key] is not None and not _is_int(cfg[key]):
            raise ValueError(f"unet param {key!r} must be an int or null, got {cfg[key]!r}")


def _check_values(cfg: dict[str, Any]) -> None:
    for key in (
        "in_channels",
        "model_channels",
        "out_channels",
        "num_res_blocks",
        "transformer_depth",
        "temporal_transformer_depth",
    ):
        if cfg[key] < 1:
            raise ValueError(f"unet param {key!r} must be >= 1, got {cfg[key]}")
    if not cfg["channel_mult"]:
        raise ValueError("unet param 'channel_mult' must not be empty")
    if not 0.0 <= cfg["dropout"] < 1.0:
        raise ValueError(f"unet param 'dropout' must be in [0, 1), got {cfg['dropout']}")
    if cfg["dims"] != 2:
        raise ValueError(f"unet param 'dims' must be 2 (frames are folded into the batch), got {cfg['dims']}")
    if cfg["use_fp16"]:
        raise ValueError(
            "unet param 'use_fp16': true is not supported; pass dtype=torch.float16 when building"
        )
    if cfg["context_dim"] is None or cfg["context_dim"] < 1:
        raise ValueError("unet param 'context_dim' is required (the UNet cross-attends to the text context)")
    heads, head_channels = cfg["num_heads"], cfg["num_head_channels"]
    if heads == -1 and head_channels == -1:
        raise ValueError("unet params 'num_heads'/'num_head_channels': set one of them")
    if head_channels != -1 and head_channels < 1:
        raise ValueError(f"unet param 'num_head_channels' must be >= 1 or -1, got {head_channels}")
    if head_channels == -1 and heads < 1:
        raise ValueError(f"unet param 'num_heads' must be >= 1 or -1, got {heads}")
    if cfg["addition_attention"] and head_channels == -1:
        raise ValueError(
            "unet param 'addition_attention' needs 'num_head_channels' (init_attn uses 8 heads of it)"
        )
    temporal_needs_length = cfg["temporal_attention"] or cfg["addition_attention"]
    for key in ("use_relative_position", "use_causal_attention"):
        if cfg[key] and temporal_needs_length and cfg["temporal_length"] is None:
            raise ValueError(f"unet param {key!r}: true needs 'temporal_length'")
    if cfg["temporal_length"] is not None and cfg["temporal_length"] < 1:
        raise ValueError(f"unet param 'temporal_length' must be >= 1, got {cfg['temporal_length']}")
    reachable = [2**level for level in range(len(cfg["channel_mult"]))]
    unreachable = sorted(set(cfg["attention_resolutions"]) - set(reachable))
    if unreachable:
        raise ValueError(
            f"unet param 'attention_resolutions': {unreachable} never occur; with "
            f"{len(cfg['channel_mult'])} levels the downsampling factors are {reachable}"
        )
    for mult in [1, *cfg["channel_mult"]]:
        channels = mult * cfg["model_channels"]
        if channels % _GROUPS:
            raise ValueError(
                f"unet params 'model_channels'/'channel_mult': width {channels} is not divisible by "
                f"the {_GROUPS} GroupNorm groups"
            )
        if head_channels != -1 and channels < head_channels:
            raise ValueError(f"unet param 'num_head_channels' ({head_channels}) exceeds width {channels}")
        if head_channels == -1 and channels < heads:
            raise ValueError(f"unet param 'num_heads' ({heads}) exceeds width {channels}")


def resolve_unet_params(params: Mapping[str, Any]) -> dict[str, Any]:
    """Fill LVDM defaults into ``params`` and validate; return a new JSON-able dict.

    Raises:
        ValueError: naming the key, for an unknown, missing, mistyped or inconsistent parameter.
    """
    if not isinstance(params, Mapping):
        raise ValueError(f"unet params must be a mapping, got {type(params).__name__}")
    if "params" in params and "target" in params:
        raise ValueError("got an LVDM 'unet_config' (target/params); pass its 'params' dict")
    known = set(LVDM_UNET_REQUIRED) | set(LVDM_UNET_DEFAULTS)
    unknown = sorted(set(params) - known)
    if unknown:
        raise ValueError(f"unknown unet param(s) {unknown}; valid keys: {sorted(known)}")
    missing = [key for key in LVDM_UNET_REQUIRED if key not in params]
    if missing:
        raise ValueError(f"missing required unet param(s) {missing}")
    cfg = copy.deepcopy(LVDM_UNET_DEFAULTS)
    cfg.update(copy.deepcopy(dict(params)))
    cfg = {key: cfg[key] for key in (*LVDM_UNET_REQUIRED, *LVDM_UNET_DEFAULTS)}
    _check_types(cfg)
    _check_values(cfg)
    return cfg
