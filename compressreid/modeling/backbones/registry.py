"""BACKBONES registry. Contract: ``builder(cfg) -> nn.Module`` with ``out_channels`` and ``feature_info``.

``feature_info`` lists the taps (module path relative to the backbone, channels, stride) that
distillation, pruning and quantization read instead of probing.
"""

from __future__ import annotations

from torch import nn
from yacs.config import CfgNode

from compressreid.registry import Registry

BACKBONES = Registry("backbone")


def build_backbone(cfg: CfgNode) -> nn.Module:
    return BACKBONES.get(cfg.MODEL.BACKBONE.NAME)(cfg)
