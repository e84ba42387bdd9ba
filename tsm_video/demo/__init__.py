"""The embedded demo (``tsm-video demo``): the whole VC2 + TSM pipeline on CPU in minutes.

- :mod:`.pipeline`: data → shipped base → stage 1 / 2 → held-out loss, clips, light scores → report;
- :mod:`.base`: the recipe of the shipped pretrained base (``python -m tsm_video.demo.base``);
- :mod:`.vae`: the recipe of the shipped tiny-VAE weights (``python -m tsm_video.demo.vae``);
- :mod:`.recipe_io`: a shipped weight file written with its recipe, stats and command;
- :mod:`.outdir`: the marked output folder (the demo deletes only what it created).
"""

from tsm_video.demo.pipeline import DEMO_CONFIG, run_demo

__all__ = ["run_demo", "DEMO_CONFIG"]
