"""Prompts → clips: any registered backbone with experts that follow the timestep (``tsm-video generate``).

Python API::

    from tsm_video.generation import GenerateSettings, attach_adapter, clip_seed, generate_clips,
        inspect_adapter
    spec = inspect_adapter("assemble/adapter.safetensors", "vc2", num_timesteps=1000)
    switcher = attach_adapter(model, spec)           # inject + strict load; DDIM callback
    clips = generate_clips(model, prompts, [clip_seed(123, p) for p in prompts],
                           GenerateSettings(), switcher)   # (B, 3, F, H, W) in [-1, 1]

The names are imported on first use (:mod:`tsm_video._lazy`).
"""

from tsm_video._lazy import lazy_exports

_EXPORTS = {
    **dict.fromkeys(
        ["AdapterSpec", "AdapterSpecError", "ExpertSwitcher", "attach_adapter", "inspect_adapter"], "experts"
    ),
    **dict.fromkeys(["compare_grid", "to_uint8_frames", "write_frame_grid", "write_gif"], "media"),
    **dict.fromkeys(["Variant", "load_backbone", "parse_compare", "run_compare", "run_generate"], "pipeline"),
    **dict.fromkeys(
        ["PromptError", "PromptItem", "clip_seed", "parse_shard", "read_prompts", "select_shard"], "prompts"
    ),
    **dict.fromkeys(["ManifestError", "OutputOptions", "RunSummary", "run_prompts"], "runner"),
    "generate_clips": "sampling",
    **dict.fromkeys(["GenerateSettings", "SettingsError"], "settings"),
}

__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, globals(), _EXPORTS)
