"""TimeStep Master (TSM): interval LoRA experts and a timestep-gated router, backbone-agnostic.

Usage::

    ctx = TimestepContext(num_timesteps=1000)
    names = inject(unet, "vc2", ctx=ctx, scales=[8], rank=4, alpha=4.0, mode="foster")
    configure_stage(unet, "foster")
    ctx.set(t)                      # (B,) timesteps, once per forward
    eps = unet(x_t, t, text)        # every TSM layer uses the expert of its sample's t
    save_adapter(unet, "s8.safetensors", {"backbone": "vc2"})
"""

from .context import ContextError, TimestepContext
from .inject import PRESETS, inject, summary, tsm_layers
from .io import (
    FORMAT_VERSION,
    AdapterError,
    adapter_state_dict,
    export_interval_lora,
    load_adapter,
    read_adapter,
    read_adapter_metadata,
    save_adapter,
    write_adapter_file,
)
from .layers import MODES, TSMConv, TSMLayer, TSMLinear
from .router import GATE_ACTIVATIONS, Router
from .schedule import IntervalSchedule
from .stage import STAGES, configure_stage, merge_interval, merge_timestep, trainable_parameters, unmerge_all
from .switch import SwitchPlan

__all__ = [
    "IntervalSchedule",
    "TimestepContext",
    "ContextError",
    "TSMLayer",
    "TSMLinear",
    "TSMConv",
    "MODES",
    "Router",
    "GATE_ACTIVATIONS",
    "inject",
    "PRESETS",
    "tsm_layers",
    "summary",
    "STAGES",
    "configure_stage",
    "trainable_parameters",
    "merge_interval",
    "merge_timestep",
    "SwitchPlan",
    "unmerge_all",
    "AdapterError",
    "FORMAT_VERSION",
    "adapter_state_dict",
    "save_adapter",
    "load_adapter",
    "read_adapter_metadata",
    "read_adapter",
    "write_adapter_file",
    "export_interval_lora",
]
