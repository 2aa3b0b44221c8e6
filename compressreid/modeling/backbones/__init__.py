"""Backbone registry; importing this package registers every backbone module."""

from compressreid.modeling.backbones.registry import BACKBONES, build_backbone
from compressreid.modeling.backbones import resnet  # noqa: F401  (registers)

__all__ = ["BACKBONES", "build_backbone"]
