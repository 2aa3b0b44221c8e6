"""Embedding head: pooling, optional 1x1 reduction, BNNeck, classifier (fast-reid v1 parameter names).

Eval output = the post-BNNeck embedding, as fast-reid returns it. The reduction can be followed by BN + ReLU
(``reduction_bn_relu``): the branch head of fast-reid's model-zoo generation MGN (pool -> 1x1 conv -> BN -> ReLU
-> BNNeck), which v1.x dropped; it exists so those checkpoints load (``compressreid.checkpoint_formats``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from yacs.config import CfgNode

from compressreid.errors import ConfigError
from compressreid.modeling.contract import BranchOutput
from compressreid.modeling.layers.classifiers import build_classifier
from compressreid.modeling.layers.norm import get_norm
from compressreid.modeling.layers.pooling import build_pooling
from compressreid.registry import Registry

HEADS = Registry("head")


@HEADS.register()
class EmbeddingHead(nn.Module):
    """Pool -> [1x1 reduction [-> BN -> ReLU]] -> [BNNeck] -> embedding; classifier ``weight`` when num_classes > 0.

    Args:
        feat_dim: channels of the incoming feature map.
        num_classes: training identities (0 = no classifier, e.g. a distillation-only student).
        embedding_dim: reduction output channels; 0 keeps feat_dim.
        with_bnneck: add the BatchNorm bottleneck (bias frozen, as BoT does).
        pool_layer, cls_layer, scale, margin, norm: fast-reid names and meanings.
        neck_feat: "before" or "after": which feature metric losses see. "before" is the pooled feature, or
            with ``reduction_bn_relu`` the reduced one, as each generation of fast-reid defined it.
        reduction_bn_relu: BN + ReLU after the reduction (needs ``embedding_dim`` > 0 and the BNNeck).
    """

    def __init__(self, feat_dim: int, num_classes: int = 0, embedding_dim: int = 0, with_bnneck: bool = True,
                 pool_layer: str = "GlobalAvgPool", neck_feat: str = "after", cls_layer: str = "Linear",
                 scale: float = 1.0, margin: float = 0.0, norm: str = "BN", reduction_bn_relu: bool = False):
        super().__init__()
        if neck_feat not in ("before", "after"):
            raise ConfigError(f"MODEL.HEADS.NECK_FEAT '{neck_feat}' must be 'before' or 'after'")
        if reduction_bn_relu and not (embedding_dim > 0 and with_bnneck):
            raise ConfigError("MODEL.HEADS.REDUCTION_BN_RELU needs a reduction (MODEL.HEADS.EMBEDDING_DIM > 0) and "
                              f"the BNNeck (MODEL.HEADS.WITH_BNNECK True), got EMBEDDING_DIM {embedding_dim}, "
                              f"WITH_BNNECK {with_bnneck}")
        self.pool_layer = build_pooling(pool_layer)
        self.neck_feat = neck_feat
        neck = []
        if embedding_dim > 0:
            neck.append(nn.Conv2d(feat_dim, embedding_dim, 1, bias=False))
            feat_dim = embedding_dim
            if reduction_bn_relu:
                neck.extend([get_norm(norm, feat_dim), nn.ReLU()])
        self.reduction_bn_relu = reduction_bn_relu
        if with_bnneck:
            bnneck = get_norm(norm, feat_dim)
            bnneck.bias.requires_grad_(False)  # BoT: a frozen-bias BNNeck
            neck.append(bnneck)
        self.bottleneck = nn.Sequential(*neck)
        self.embedding_dim = feat_dim
        self.num_classes = num_classes
        self.cls_layer = build_classifier(cls_layer, scale, margin)
        if num_classes > 0:
            self.weight = nn.Parameter(torch.empty(num_classes, feat_dim))
            nn.init.normal_(self.weight, std=0.01)
        self._init_neck()

    @classmethod
    def from_config(cls, cfg: CfgNode, feat_dim: int, num_classes: int) -> "EmbeddingHead":
        h = cfg.MODEL.HEADS
        return cls(feat_dim, num_classes, h.EMBEDDING_DIM, h.WITH_BNNECK, h.POOL_LAYER, h.NECK_FEAT, h.CLS_LAYER,
                   h.SCALE, h.MARGIN, h.NORM, h.REDUCTION_BN_RELU)

    def _init_neck(self) -> None:
        for module in self.bottleneck:
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, (nn.BatchNorm2d, nn.SyncBatchNorm)):
                nn.init.constant_(module.weight, 1.0)
                nn.init.constant_(module.bias, 0.0)

    def _pool_and_neck(self, features: torch.Tensor):
        """(the "before" feature, the neck output)."""
        pooled = self.pool_layer(features)
        if self.reduction_bn_relu:  # the model-zoo MGN head: the BNNeck (last layer) reads the reduced feature
            reduced = self.bottleneck[:-1](pooled)
            return reduced, self.bottleneck[-1](reduced)
        return pooled, self.bottleneck(pooled)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """Eval embedding [B, D] (post-BNNeck)."""
        return self._pool_and_neck(features)[1].flatten(1)

    def forward_train(self, features: torch.Tensor, targets: torch.Tensor | None = None) -> BranchOutput:
        pooled, neck = self._pool_and_neck(features)
        embedding = neck.flatten(1)
        feature = pooled.flatten(1) if self.neck_feat == "before" else embedding
        if self.num_classes == 0:
            return BranchOutput(embedding, feature)
        if self.cls_layer.normalized:
            raw = F.linear(F.normalize(embedding), F.normalize(self.weight))
        else:
            raw = F.linear(embedding, self.weight)
        logits = self.cls_layer(raw, targets)
        return BranchOutput(embedding, feature, logits, raw * self.cls_layer.s)


def build_head(cfg: CfgNode, feat_dim: int, num_classes: int) -> nn.Module:
    return HEADS.get(cfg.MODEL.HEADS.NAME).from_config(cfg, feat_dim, num_classes)
