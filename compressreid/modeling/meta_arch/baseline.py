"""Baseline (BoT / SBS): backbone + embedding head, normalising RGB 0-255 input inside the model."""

from __future__ import annotations

import torch
from torch import nn
from yacs.config import CfgNode

from compressreid.modeling.backbones import build_backbone
from compressreid.modeling.contract import FeatureInfo, ModelOutput, PixelNormalizer, ReIDModel
from compressreid.modeling.heads import build_head
from compressreid.modeling.meta_arch.registry import META_ARCHITECTURES


@META_ARCHITECTURES.register()
class Baseline(ReIDModel):
    """fast-reid's Baseline with module names ``backbone`` and ``heads`` so its checkpoints map 1:1."""

    def __init__(self, backbone: nn.Module, heads: nn.Module, pixel_mean, pixel_std):
        super().__init__()
        self.preprocess = PixelNormalizer(pixel_mean, pixel_std)
        self.backbone = backbone
        self.heads = heads
        self.embedding_dim = heads.embedding_dim
        self.feature_info = [FeatureInfo(f"backbone.{f.module}", f.channels, f.stride) for f in backbone.feature_info]

    @classmethod
    def from_config(cls, cfg: CfgNode, num_classes: int, pretrained: bool = False) -> "Baseline":
        backbone = build_backbone(cfg, pretrained)
        heads = build_head(cfg, backbone.out_channels, num_classes)
        return cls(backbone, heads, cfg.MODEL.PIXEL_MEAN, cfg.MODEL.PIXEL_STD)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.heads(self.backbone(self.preprocess(images)))

    def forward_train(self, images: torch.Tensor, targets: torch.Tensor | None = None) -> ModelOutput:
        branch = self.heads.forward_train(self.backbone(self.preprocess(images)), targets)
        return ModelOutput(branch.embedding, [branch])
