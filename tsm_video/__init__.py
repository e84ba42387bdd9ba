"""tsm-video: TimeStep Master (TSM) post-pretraining for text-to-video diffusion models."""

__version__ = "0.1.0"
