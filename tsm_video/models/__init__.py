"""Backbones behind one protocol (:class:`Backbone`), built by registry name."""

from tsm_video.models.backbone import Backbone, BackboneSpec, CheckpointError, FullCheckpoint
from tsm_video.models.registry import BACKBONES, build_backbone

__all__ = ["BACKBONES", "Backbone", "BackboneSpec", "CheckpointError", "FullCheckpoint", "build_backbone"]
