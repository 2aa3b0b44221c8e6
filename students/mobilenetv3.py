"""MobileNetV3 small/large backbones: torchvision's trunk (hard-swish, SE), no pretrained download.

Registered as ``mobilenetv3_small`` and ``mobilenetv3_large``; MODEL.BACKBONE.WIDTH is torchvision's
``width_mult``. MODEL.BACKBONE.LAST_STRIDE 1 turns the last stride-2 stage into stride 1 with dilation 2
(torchvision's ``dilated``), the ReID "last stride 1" trick that keeps a 4x2 map at 64x32 input.
"""

from __future__ import annotations

from typing import Callable, List, Optional, Tuple

import torch
from torch import nn
from torchvision.models import mobilenet_v3_large, mobilenet_v3_small
from yacs.config import CfgNode

from compressreid.checkpoint import LoadReport
from compressreid.modeling.backbones.pretrained import resolve_pretrain_path
from compressreid.errors import ConfigError
from compressreid.modeling.backbones.registry import BACKBONES
from compressreid.modeling.contract import FeatureInfo
from compressreid.students.local_weights import load_backbone_weights


def _stride_and_dilation(module: nn.Module) -> Tuple[int, int]:
    """Spatial stride a block applies (product of its convs' strides) and its largest dilation."""
    stride, dilation = 1, 1
    for conv in module.modules():
        if isinstance(conv, nn.Conv2d):
            stride *= conv.stride[0]
            dilation = max(dilation, conv.dilation[0])
    return stride, dilation


def _out_channels(module: nn.Module) -> int:
    return getattr(module, "out_channels", None) or module[0].out_channels


class MobileNetV3Backbone(nn.Module):
    """torchvision MobileNetV3 ``features`` (stem, inverted residuals, last 1x1 conv); returns the last map.

    Taps: the last block at each stride from 4 on, and the final 1x1 conv.
    """

    def __init__(self, builder: Callable[..., nn.Module], width: float = 1.0, last_stride: int = 2):
        super().__init__()
        if width <= 0:
            raise ConfigError(f"MODEL.BACKBONE.WIDTH must be positive, got {width}")
        if last_stride not in (1, 2):
            raise ConfigError(f"MODEL.BACKBONE.LAST_STRIDE must be 1 or 2 for MobileNetV3, got {last_stride}")
        # weights=None: never download; the ImageNet classifier is dropped, only the trunk is kept
        self.features = builder(weights=None, width_mult=width, dilated=last_stride == 1).features
        self.out_channels = _out_channels(self.features[-1])
        self.feature_info = self._taps()

    def _taps(self) -> List[FeatureInfo]:
        strides, dilations, stride = [], [], 1
        for block in self.features:
            block_stride, dilation = _stride_and_dilation(block)
            stride *= block_stride
            strides.append(stride)
            dilations.append(dilation)
        last = len(self.features) - 1
        # a stage ends where the next block downsamples or (LAST_STRIDE 1) starts dilating instead
        ends = [i for i in range(last - 1) if strides[i] >= 4
                and (strides[i + 1] != strides[i] or dilations[i + 1] != dilations[i])]
        taps = ends + [last - 1, last]  # plus the last inverted residual and the final 1x1 conv
        return [FeatureInfo(f"features.{i}", _out_channels(self.features[i]), strides[i]) for i in taps]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)


def mobilenetv3_key_map(key: str) -> Optional[str]:
    """torchvision ImageNet files: keep ``features.*`` as is, drop the classifier."""
    return key if key.startswith("features.") else None


def load_pretrained(backbone: MobileNetV3Backbone, path: str) -> LoadReport:
    """Initialise from a local torchvision-format ImageNet file; reports what did not transfer."""
    return load_backbone_weights(backbone, path, mobilenetv3_key_map)


def _build(cfg: CfgNode, builder: Callable[..., nn.Module], pretrained: bool = False) -> MobileNetV3Backbone:
    bb = cfg.MODEL.BACKBONE
    if bb.WITH_IBN or bb.WITH_NL:
        raise ConfigError("MODEL.BACKBONE.WITH_IBN / WITH_NL are not supported by MobileNetV3 backbones")
    backbone = MobileNetV3Backbone(builder, bb.WIDTH, bb.LAST_STRIDE)
    path = resolve_pretrain_path(cfg) if pretrained else ""
    if path:
        load_pretrained(backbone, path)
    return backbone


@BACKBONES.register("mobilenetv3_small")
def build_mobilenetv3_small_backbone(cfg: CfgNode, pretrained: bool = False) -> MobileNetV3Backbone:
    """MobileNetV3-Small trunk (576 channels at width 1.0)."""
    return _build(cfg, mobilenet_v3_small, pretrained)


@BACKBONES.register("mobilenetv3_large")
def build_mobilenetv3_large_backbone(cfg: CfgNode, pretrained: bool = False) -> MobileNetV3Backbone:
    """MobileNetV3-Large trunk (960 channels at width 1.0)."""
    return _build(cfg, mobilenet_v3_large, pretrained)
