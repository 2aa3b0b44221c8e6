"""HAA: head-shoulder adaptive attention network (Xu et al., "Black Re-ID", ACM MM 2020, arXiv 2008.08528).

A global ResNet branch and a head-shoulder ResNet branch with per-stripe attention, fused by an adaptive ensemble
that weighs the head-shoulder features more for people in black clothes. fast-reid ships no HAA; the sources of
facts were the paper's abstract and the authors' released fast-reid project (github.com/xbq1994/HAA; no code
copied). What follows them, and every choice they leave open or that we changed, with the reason:

- Two trunks with separate weights, as the paper (``backbone`` on the image, ``hs_backbone`` on the head-shoulder
  crop), both our ResNetBackbone built from MODEL.BACKBONE (DEPTH, WITH_IBN, NORM, WIDTH, LAST_STRIDE).
- Head-shoulder region: the paper uses an STN pre-trained on head-shoulder box annotations and frozen; we have no
  box annotations, so a fixed prior box MODEL.HAA.HS_BOX resampled to the input size (see HeadShoulderCrop).
- Head-shoulder attention: the map is cut into MODEL.HAA.NUM_STRIPES horizontal stripes (paper: 3), each with its
  own residual channel attention (paper's bottleneck ratio 2) and spatial attention (ours is learned; see
  StripeAttention), its own embedding head (pool, 1x1 reduction to MODEL.HAA.STRIPE_DIM, BNNeck, classifier);
  the stripe embeddings are concatenated into the head-shoulder branch (BNNeck + classifier), as the paper.
- Adaptive ensemble: black-clothes logits from the global embedding, mapped to two softmax weights; fused =
  [w_global * global, w_hs * head_shoulder] through a last BNNeck + classifier (see AdaptiveEnsemble). The gate is
  supervised by EnsembleGateLoss with the black-clothes flag (the paper's black-ID cross-entropy).
- Every branch vector is its post-BNNeck embedding in training and at eval alike (the released code mixes pre- and
  post-BNNeck vectors between the two modes).
- Losses: MODEL.LOSSES.NAME on every branch (global, each stripe, head-shoulder, fused) plus EnsembleGateLoss. The
  released code adds the fused-branch and gate losses only in the last third of training; we train all from the
  start (no schedule inside the model) and weight them from the config.

Eval output: the fused post-BNNeck embedding, dimension D_global + NUM_STRIPES * STRIPE_DIM, where D_global is
MODEL.HEADS.EMBEDDING_DIM (or the trunk's channels when 0) and STRIPE_DIM 0 means the trunk's channels.
"""

from __future__ import annotations

from typing import List

import torch
from torch import nn
from yacs.config import CfgNode

from compressreid.modeling.backbones.resnet import build_resnet_backbone
from compressreid.modeling.contract import BranchOutput, FeatureInfo, ModelOutput, PixelNormalizer, ReIDModel
from compressreid.modeling.heads.embedding_head import EmbeddingHead
from compressreid.modeling.losses.ensemble_losses import BLACK_LOGITS, ENSEMBLE_WEIGHTS
from compressreid.modeling.meta_arch.registry import META_ARCHITECTURES

from compressreid.teachers.haa_layers import AdaptiveEnsemble, HeadShoulderAttention, HeadShoulderCrop


def _vector_head(cfg: CfgNode, dim: int, num_classes: int) -> EmbeddingHead:
    """BNNeck + classifier over an already-pooled vector (fed as [B, dim, 1, 1])."""
    h = cfg.MODEL.HEADS
    return EmbeddingHead(dim, num_classes, 0, True, "Identity", h.NECK_FEAT, h.CLS_LAYER, h.SCALE, h.MARGIN, h.NORM)


@META_ARCHITECTURES.register()
class HAA(ReIDModel):
    """Global branch + attended head-shoulder branch, fused by a black-clothes-aware adaptive ensemble.

    Branch order in ``forward_train``: global, stripe 1..N, head-shoulder, fused. ``aux`` carries the gate's
    ``black_logits`` and the ``ensemble_weights`` (global, head-shoulder).
    """

    def __init__(self, backbone: nn.Module, hs_backbone: nn.Module, heads: EmbeddingHead, crop: HeadShoulderCrop,
                 hs_attention: HeadShoulderAttention, stripe_heads: List[EmbeddingHead], hs_head: EmbeddingHead,
                 ensemble: AdaptiveEnsemble, fused_head: EmbeddingHead, pixel_mean, pixel_std):
        super().__init__()
        self.preprocess = PixelNormalizer(pixel_mean, pixel_std)
        self.backbone, self.heads = backbone, heads
        self.crop, self.hs_backbone, self.hs_attention = crop, hs_backbone, hs_attention
        self.stripe_heads = nn.ModuleList(stripe_heads)
        self.hs_head, self.ensemble, self.fused_head = hs_head, ensemble, fused_head
        self.embedding_dim = fused_head.embedding_dim
        # Head-shoulder taps are in crop coordinates; the crop is resampled to the input size, so strides match.
        self.feature_info = (
            [FeatureInfo(f"backbone.{f.module}", f.channels, f.stride) for f in backbone.feature_info]
            + [FeatureInfo(f"hs_backbone.{f.module}", f.channels, f.stride) for f in hs_backbone.feature_info]
            + [FeatureInfo("hs_attention", hs_backbone.out_channels, hs_backbone.feature_info[-1].stride)]
        )

    @classmethod
    def from_config(cls, cfg: CfgNode, num_classes: int, pretrained: bool = False) -> "HAA":
        a = cfg.MODEL.HAA
        # two trunks with their own weights, both from ImageNet when pretrained, as the paper's two ResNet-50s
        backbone, hs_backbone = build_resnet_backbone(cfg, pretrained), build_resnet_backbone(cfg, pretrained)
        channels = hs_backbone.out_channels
        heads = EmbeddingHead.from_config(cfg, backbone.out_channels, num_classes)
        h = cfg.MODEL.HEADS
        stripe_heads = [EmbeddingHead(channels, num_classes, a.STRIPE_DIM, True, h.POOL_LAYER, h.NECK_FEAT,
                                      h.CLS_LAYER, h.SCALE, h.MARGIN, h.NORM) for _ in range(a.NUM_STRIPES)]
        hs_dim = sum(head.embedding_dim for head in stripe_heads)
        return cls(backbone, hs_backbone, heads, HeadShoulderCrop(a.HS_BOX),
                   HeadShoulderAttention(channels, a.NUM_STRIPES, a.ATTENTION_REDUCTION), stripe_heads,
                   _vector_head(cfg, hs_dim, num_classes), AdaptiveEnsemble(heads.embedding_dim),
                   _vector_head(cfg, heads.embedding_dim + hs_dim, num_classes), cfg.MODEL.PIXEL_MEAN,
                   cfg.MODEL.PIXEL_STD)

    def _maps(self, images: torch.Tensor):
        x = self.preprocess(images)
        hs_map = self.hs_attention(self.hs_backbone(self.crop(x)))
        return self.backbone(x), self.hs_attention.split(hs_map)

    @staticmethod
    def _fuse(weights: torch.Tensor, global_vec: torch.Tensor, hs_vec: torch.Tensor) -> torch.Tensor:
        return torch.cat([weights[:, :1] * global_vec, weights[:, 1:] * hs_vec], dim=1)[:, :, None, None]

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Fused eval embedding [B, embedding_dim]; uses no labels."""
        global_map, stripes = self._maps(images)
        global_vec = self.heads(global_map)
        hs_vec = torch.cat([head(part) for head, part in zip(self.stripe_heads, stripes)], dim=1)
        hs_vec = self.hs_head(hs_vec[:, :, None, None])
        weights, _ = self.ensemble(global_vec)
        return self.fused_head(self._fuse(weights, global_vec, hs_vec))

    def forward_train(self, images: torch.Tensor, targets: torch.Tensor | None = None) -> ModelOutput:
        global_map, stripes = self._maps(images)
        global_branch = self.heads.forward_train(global_map, targets)
        stripe_branches = [head.forward_train(part, targets) for head, part in zip(self.stripe_heads, stripes)]
        hs_vec = torch.cat([b.embedding for b in stripe_branches], dim=1)[:, :, None, None]
        hs_branch = self.hs_head.forward_train(hs_vec, targets)
        weights, black_logits = self.ensemble(global_branch.embedding)
        fused = self.fused_head.forward_train(self._fuse(weights, global_branch.embedding, hs_branch.embedding),
                                              targets)
        branches: List[BranchOutput] = [global_branch, *stripe_branches, hs_branch, fused]
        return ModelOutput(fused.embedding, branches, {BLACK_LOGITS: black_logits, ENSEMBLE_WEIGHTS: weights})
