"""Backbones behind one protocol (:class:`Backbone`), built by registry name.

The names below are imported on first use (:mod:`tsm_video._lazy`)."""

from tsm_video._lazy import lazy_exports

_EXPORTS = {
    "Backbone": "backbone",
    "BackboneSpec": "backbone",
    "CheckpointError": "backbone",
    "FullCheckpoint": "backbone",
    "BACKBONES": "registry",
    "build_backbone": "registry",
}

__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, globals(), _EXPORTS)
