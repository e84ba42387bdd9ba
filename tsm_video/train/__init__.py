"""Training: the accelerate trainer for the base, lora/foster (TSM stage 1) and assemble (stage 2) stages.

``tsm_video.train.runner.run_training(cfg)`` runs a run config's stages; see docs/training.md.
Modules: ``stages`` (plan, what is built/loaded/trained), ``objective`` (VC2 ε-MSE), ``randomness``
(timesteps, noise, caption dropout), ``loop`` (one stage), ``checkpoint`` (atomic accelerate state),
``interval_loss`` (the per-interval diagnostic), ``validation`` (clips), ``plan`` (dry run),
``evaluate`` (held-out per-interval ε-MSE), ``intervals`` (per-expert files → a scale's adapter),
``identity`` (recipe keys and base-weights hash that expert files must share).
"""
