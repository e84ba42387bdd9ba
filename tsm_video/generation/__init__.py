"""Prompts → clips: any registered backbone with experts that follow the timestep (``tsm-video generate``).

Python API::

    from tsm_video.generation import GenerateSettings, attach_adapter, clip_seed, generate_clips,
        inspect_adapter
    spec = inspect_adapter("assemble/adapter.safetensors", "vc2", num_timesteps=1000)
    switcher = attach_adapter(model, spec)           # inject + strict load; DDIM callback
    clips = generate_clips(model, prompts, [clip_seed(123, p) for p in prompts],
                           GenerateSettings(), switcher)   # (B, 3, F, H, W) in [-1, 1]
"""

from .experts import AdapterSpec, AdapterSpecError, ExpertSwitcher, attach_adapter, inspect_adapter
from .media import compare_grid, to_uint8_frames, write_frame_grid, write_gif
from .pipeline import Variant, load_backbone, parse_compare, run_compare, run_generate
from .prompts import PromptError, PromptItem, clip_seed, parse_shard, read_prompts, select_shard
from .runner import ManifestError, OutputOptions, RunSummary, run_prompts
from .sampling import generate_clips
from .settings import GenerateSettings, SettingsError

__all__ = [
    "AdapterSpec", "AdapterSpecError", "ExpertSwitcher", "attach_adapter", "inspect_adapter",
    "compare_grid", "to_uint8_frames", "write_frame_grid", "write_gif",
    "Variant", "load_backbone", "parse_compare", "run_compare", "run_generate",
    "PromptError", "PromptItem", "clip_seed", "parse_shard", "read_prompts", "select_shard",
    "ManifestError", "OutputOptions", "RunSummary", "run_prompts",
    "generate_clips",
    "GenerateSettings", "SettingsError",
]
