"""MGN (Multiple Granularity Network, Wang et al. 2018) with fast-reid 1.4.0's module and parameter names.

A shared ResNet trunk feeds three branches: one global, one split into 2 horizontal stripes, one into 3.
"""

from __future__ import annotations

import copy
from dataclasses import replace
from typing import List, Sequence, Tuple

import torch
from torch import nn
from yacs.config import CfgNode

from compressreid.errors import ConfigError
from compressreid.modeling.backbones.resnet import ResNetBackbone, build_resnet_backbone
from compressreid.modeling.contract import BranchOutput, FeatureInfo, ModelOutput, PixelNormalizer, ReIDModel
from compressreid.modeling.heads import build_head
from compressreid.modeling.meta_arch.registry import META_ARCHITECTURES

# Heads in fast-reid's eval concatenation order: the three globals, then the stripes top to bottom.
HEAD_ORDER = ("b1_head", "b2_head", "b3_head", "b21_head", "b22_head", "b31_head", "b32_head", "b33_head")


def _stride_one_copy(stage: nn.Sequential) -> nn.Sequential:
    """A copy of a ResNet stage with the same weights but stride 1 (MGN's part branches keep resolution).

    Only strides change, so the copy has the same parameter names and shapes as the stage; fast-reid
    builds a fresh stride-1 stage and loads the stage's state dict into it, which gives the same result.
    """
    stage = copy.deepcopy(stage)
    for module in stage.modules():
        if isinstance(module, nn.Conv2d):
            module.stride = (1, 1)
    return stage


def split_stripes(features: torch.Tensor, parts: int) -> Tuple[torch.Tensor, ...]:
    """Split a feature map into ``parts`` horizontal stripes exactly as fast-reid's ``torch.chunk`` does.

    ``torch.chunk`` returns fewer pieces when the height is small (4 rows into 3 gives 2+2, as with
    64x32 inputs); fast-reid then fails, so there we split as evenly as possible (2+1+1) instead.

    Raises:
        ConfigError: the feature map has fewer rows than stripes (the input image is too short).
    """
    height = features.shape[2]
    if height < parts:
        raise ConfigError(f"MGN needs at least {parts} feature rows for {parts} stripes, got {height}; "
                          f"use input images at least {16 * parts} pixels high")
    stripes = torch.chunk(features, parts, dim=2)
    return stripes if len(stripes) == parts else torch.tensor_split(features, parts, dim=2)


@META_ARCHITECTURES.register()
class MGN(ReIDModel):
    """Trunk ``backbone`` (stem + layer1 + layer2 + layer3[0], an ``nn.Sequential`` as in fast-reid), branches
    ``b1``/``b2``/``b3`` (rest of layer3 + a layer4 copy; stride 1 in b2/b3) and eight embedding heads.

    The eval embedding concatenates the eight post-BNNeck embeddings in ``HEAD_ORDER``.
    """

    def __init__(self, resnet: ResNetBackbone, heads: Sequence[nn.Module], pixel_mean, pixel_std):
        super().__init__()
        if len(heads) != len(HEAD_ORDER):
            raise ConfigError(f"MGN needs {len(HEAD_ORDER)} heads, got {len(heads)}")
        self.preprocess = PixelNormalizer(pixel_mean, pixel_std)
        # The backbone's non-local blocks are not used, as in fast-reid (its SBS-based recipes may set WITH_NL).
        self.backbone = nn.Sequential(resnet.conv1, resnet.bn1, resnet.relu, resnet.maxpool,
                                      resnet.layer1, resnet.layer2, resnet.layer3[0])
        res_conv4 = nn.Sequential(*resnet.layer3[1:])
        # All three branches start from the same weights; only b1 keeps the configured last stride.
        self.b1 = nn.Sequential(copy.deepcopy(res_conv4), copy.deepcopy(resnet.layer4))
        self.b2 = nn.Sequential(copy.deepcopy(res_conv4), _stride_one_copy(resnet.layer4))
        self.b3 = nn.Sequential(copy.deepcopy(res_conv4), _stride_one_copy(resnet.layer4))
        for name, head in zip(HEAD_ORDER, heads):
            self.add_module(name, head)
        self.embedding_dim = sum(head.embedding_dim for head in heads)
        self.feature_info = self._taps(resnet)

    @classmethod
    def from_config(cls, cfg: CfgNode, num_classes: int, pretrained: bool = False) -> "MGN":
        """Reads MODEL.BACKBONE.{DEPTH,LAST_STRIDE,NORM,WITH_IBN,WIDTH}, MODEL.HEADS.* and MODEL.PIXEL_*;
        ``pretrained`` loads the ImageNet ResNet before it is split, so every branch starts from it."""
        bb = cfg.MODEL.BACKBONE
        if bb.NAME != "build_resnet_backbone":
            raise ConfigError(f"MGN is built on ResNet stages; MODEL.BACKBONE.NAME must be "
                              f"'build_resnet_backbone', got '{bb.NAME}'")
        resnet = build_resnet_backbone(cfg, pretrained, with_nl=False)
        heads = [build_head(cfg, resnet.out_channels, num_classes) for _ in HEAD_ORDER]
        return cls(resnet, heads, cfg.MODEL.PIXEL_MEAN, cfg.MODEL.PIXEL_STD)

    @staticmethod
    def _taps(resnet: ResNetBackbone) -> List[FeatureInfo]:
        stages = resnet.feature_info  # channels/strides of layer1..layer4; layer3[0] already has layer3's
        trunk = [FeatureInfo(f"backbone.{index}", stage.channels, stage.stride)
                 for index, stage in zip((4, 5, 6), stages[:3])]
        global_stride = stages[3].stride  # 16 * last stride
        branches = [FeatureInfo("b1", resnet.out_channels, global_stride),
                    FeatureInfo("b2", resnet.out_channels, 16), FeatureInfo("b3", resnet.out_channels, 16)]
        return trunk + branches

    def _head_inputs(self, images: torch.Tensor) -> List[torch.Tensor]:
        """Feature maps for the heads, in ``HEAD_ORDER``."""
        shared = self.backbone(self.preprocess(images))
        g1, g2, g3 = self.b1(shared), self.b2(shared), self.b3(shared)
        return [g1, g2, g3, *split_stripes(g2, 2), *split_stripes(g3, 3)]

    def _heads(self) -> List[nn.Module]:
        return [getattr(self, name) for name in HEAD_ORDER]

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        features = self._head_inputs(images)
        return torch.cat([head(x) for head, x in zip(self._heads(), features)], dim=1)

    def forward_train(self, images: torch.Tensor, targets: torch.Tensor | None = None) -> ModelOutput:
        """One ``BranchOutput`` per head in ``HEAD_ORDER``; classification losses apply to all eight.

        fast-reid applies metric losses to five features: the three globals and, per part branch, the
        concatenation of its stripes. The first stripe of each group carries that concatenation as its
        ``feature``; the other stripes set ``metric_loss=False``.
        """
        features = self._head_inputs(images)
        b1, b2, b3, b21, b22, b31, b32, b33 = [
            head.forward_train(x, targets) for head, x in zip(self._heads(), features)]
        b21 = replace(b21, feature=torch.cat([b21.feature, b22.feature], dim=1))
        b31 = replace(b31, feature=torch.cat([b31.feature, b32.feature, b33.feature], dim=1))
        b22, b32, b33 = (replace(b, metric_loss=False) for b in (b22, b32, b33))
        branches: List[BranchOutput] = [b1, b2, b3, b21, b22, b31, b32, b33]
        return ModelOutput(torch.cat([b.embedding for b in branches], dim=1), branches)
