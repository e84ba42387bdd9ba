"""TSM inside stock diffusers models: per-sample ``t`` reaches the TSM layers, and the diffusers
features that cannot work with them fail with a clear message.

A diffusers denoiser receives its timesteps as the ``timestep`` argument of ``forward``: a
(B,) tensor from a trainer, a 0-dim tensor (or a number) from ``StableDiffusionPipeline``,
which the UNet broadcasts over the CFG-doubled batch. A forward pre-hook on the denoiser sets
the shared :class:`~tsm_video.tsm.TimestepContext` from that argument (a 0-dim ``t`` expanded
to the batch), so ``StableDiffusionPipeline``, ``PixArtAlphaPipeline`` and
``StableDiffusion3Pipeline`` run TSM models unchanged, and DDP / activation checkpointing see
the same ``t`` as the forward that set it.

Refused on a model holding TSM layers: ``fuse_qkv_projections`` (it would concatenate the base
weights of ``to_q``/``to_k``/``to_v`` and bypass the experts) and peft adapters (``pipe.
load_lora_weights``/``load_lora_adapter``: peft cannot wrap a TSM layer, and a peft layer
around the base would hide it from the experts) — export a TSM interval as a LoRA instead
(``tsm-video export lora``).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

from tsm_video.errors import TSMVideoError
from tsm_video.tsm import TimestepContext, tsm_layers

__all__ = ["TSMCompatibilityError", "attach_timestep_hook", "guard_tsm_model", "timestep_argument"]


class TSMCompatibilityError(TSMVideoError, RuntimeError):
    """A diffusers feature was used that cannot work on a model with TSM layers."""


def timestep_argument(denoiser: nn.Module, args: tuple, kwargs: dict) -> tuple[torch.Tensor, int]:
    """``(t, batch)`` of one ``denoiser.forward(*args, **kwargs)`` call: its ``timestep`` as a
    tensor (0-dim or (B,)) and the batch size of its first argument (the noisy latents)."""
    bound = inspect.signature(denoiser.forward).bind_partial(*args, **kwargs).arguments
    x = next(iter(bound.values()))
    t = bound.get("timestep")
    if t is None:
        raise TSMCompatibilityError(
            f"{type(denoiser).__name__}.forward was called without `timestep`; "
            "TSM layers need the timesteps of every forward"
        )
    if not isinstance(t, torch.Tensor):
        t = torch.tensor(t, device=x.device)
    return t, x.shape[0]


def attach_timestep_hook(
    denoiser: nn.Module, get_ctx: Callable[[], TimestepContext | None]
) -> RemovableHandle:
    """Register the pre-hook that sets ``get_ctx()`` (when not None) from each forward's ``timestep``.

    A (1,) or 0-dim ``t`` with a batch of B rows is expanded to (B,); a (B,) ``t`` is used as is.
    """

    def hook(module: nn.Module, args: tuple, kwargs: dict[str, Any]) -> None:
        if getattr(module, "_hf_peft_config_loaded", False) and tsm_layers(module):
            raise TSMCompatibilityError(_PEFT_MESSAGE)
        ctx = get_ctx()
        if ctx is None:
            return
        t, batch = timestep_argument(module, args, kwargs)
        ctx.set(t.reshape(()) if t.numel() == 1 else t, batch_size=batch)

    return denoiser.register_forward_pre_hook(hook, with_kwargs=True)


_PEFT_MESSAGE = (
    "peft adapters (load_lora_weights / load_lora_adapter) cannot be combined with TSM layers: "
    "merge or export the TSM interval instead (tsm-video export lora), or load the LoRA into a "
    "model without TSM layers"
)


def guard_tsm_model(model: nn.Module) -> None:
    """Make ``model.fuse_qkv_projections`` and ``model.load_lora_adapter`` refuse while the model
    holds TSM layers (they behave as usual on a model without any)."""

    def refuse_if_tsm(method_name: str, message: str) -> None:
        original = getattr(model, method_name, None)
        if original is None:
            return

        def guarded(*args: Any, **kwargs: Any) -> Any:
            if tsm_layers(model):
                raise TSMCompatibilityError(message)
            return original(*args, **kwargs)

        guarded.__doc__ = original.__doc__
        object.__setattr__(model, method_name, guarded)  # instance attribute shadows the method

    refuse_if_tsm(
        "fuse_qkv_projections",
        "fuse_qkv_projections() concatenates the base weights of "
        "to_q/to_k/to_v and would bypass the TSM experts wrapped around them; it is not available "
        "on a model with TSM layers (merge an interval with merge_interval instead)",
    )
    refuse_if_tsm("load_lora_adapter", _PEFT_MESSAGE)
