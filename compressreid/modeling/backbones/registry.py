"""BACKBONES registry. Contract: ``builder(cfg, pretrained=False) -> nn.Module`` with ``out_channels`` and
``feature_info``; with ``pretrained`` the builder initialises from MODEL.BACKBONE.PRETRAIN_PATH (see
``pretrained.resolve_pretrain_path``). Only training asks for it, so inference never needs that file.

``feature_info`` lists the taps (module path relative to the backbone, channels, stride) that
distillation, pruning and quantization read instead of probing.
"""

from __future__ import annotations

from torch import nn
from yacs.config import CfgNode

from compressreid.registry import Registry

BACKBONES = Registry("backbone")


def build_backbone(cfg: CfgNode, pretrained: bool = False) -> nn.Module:
    return BACKBONES.get(cfg.MODEL.BACKBONE.NAME)(cfg, pretrained=pretrained)
