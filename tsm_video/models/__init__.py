"""Backbones behind one protocol (encode_text, encode_video, predict_noise, decode)."""

from tsm_video.models.registry import BACKBONES, build_backbone

__all__ = ["BACKBONES", "build_backbone"]
