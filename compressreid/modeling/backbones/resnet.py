"""ResNet-18/34/50/101 with IBN-a, non-local blocks and a configurable last stride (fast-reid layout).

Blocks are torchvision's ``BasicBlock``/``Bottleneck`` (same parameter names as fast-reid); only the
first norm of each block in stages 1-3 is swapped for IBN when requested, and the stem max-pool uses
``ceil_mode=True`` as fast-reid does, so fast-reid checkpoints give identical embeddings.
"""

from __future__ import annotations

from typing import List, Optional

import torch
from torch import nn
from torchvision.models.resnet import BasicBlock, Bottleneck
from yacs.config import CfgNode

from compressreid.errors import ConfigError
from compressreid.modeling.contract import FeatureInfo
from compressreid.modeling.layers.non_local import NonLocal
from compressreid.modeling.layers.norm import IBN, get_norm
from compressreid.modeling.backbones.pretrained import load_pretrained_resnet, resolve_pretrain_path
from compressreid.modeling.backbones.registry import BACKBONES

_SPECS = {
    "18x": (BasicBlock, [2, 2, 2, 2], [0, 0, 0, 0]),
    "34x": (BasicBlock, [3, 4, 6, 3], [0, 2, 3, 0]),
    "50x": (Bottleneck, [3, 4, 6, 3], [0, 2, 3, 0]),
    "101x": (Bottleneck, [3, 4, 23, 3], [0, 2, 9, 0]),
}


class ResNetBackbone(nn.Module):
    """ResNet trunk returning the last stage's feature map."""

    def __init__(self, depth: str = "50x", last_stride: int = 1, norm: str = "BN", with_ibn: bool = False,
                 with_nl: bool = False, width: float = 1.0, zero_init_residual: bool = False):
        super().__init__()
        if depth not in _SPECS:
            raise ConfigError(f"MODEL.BACKBONE.DEPTH '{depth}' is not supported; expected one of {sorted(_SPECS)}")
        if width <= 0:
            raise ConfigError(f"MODEL.BACKBONE.WIDTH must be positive, got {width}")
        block, layers, nl_layers = _SPECS[depth]
        # width scales every stage (base 64 channels at 1.0, the standard ResNet fast-reid checkpoints use)
        self.base = max(8, int(round(64 * width)))
        self.norm, self.inplanes = norm, self.base
        self.conv1 = nn.Conv2d(3, self.base, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = get_norm(norm, self.base)
        self.relu = nn.ReLU(inplace=True)
        # fast-reid v1.x: no padding, ceil_mode=True (torchvision pads by 1; the map sizes differ)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, ceil_mode=True)
        self.layer1 = self._make_layer(block, self.base, layers[0], 1, with_ibn)
        self.layer2 = self._make_layer(block, self.base * 2, layers[1], 2, with_ibn)
        self.layer3 = self._make_layer(block, self.base * 4, layers[2], 2, with_ibn)
        self.layer4 = self._make_layer(block, self.base * 8, layers[3], last_stride, False)
        self.nl_indices = [[]] * 4
        if with_nl:
            self._build_non_local(block, layers, nl_layers)
        self.out_channels = self.base * 8 * block.expansion
        strides = [4, 8, 16, 16 * last_stride]
        self.feature_info = [
            FeatureInfo(self._stage_output(i), self.base * 2**i * block.expansion, strides[i]) for i in range(4)
        ]
        self._init_weights(zero_init_residual)

    def _make_layer(self, block, planes: int, blocks: int, stride: int, with_ibn: bool) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nn.Sequential(
                nn.Conv2d(self.inplanes, planes * block.expansion, 1, stride=stride, bias=False),
                get_norm(self.norm, planes * block.expansion),
            )
        norm_layer = lambda channels: get_norm(self.norm, channels)  # noqa: E731
        layers = [block(self.inplanes, planes, stride, downsample, norm_layer=norm_layer)]
        self.inplanes = planes * block.expansion
        layers += [block(self.inplanes, planes, norm_layer=norm_layer) for _ in range(1, blocks)]
        if with_ibn:
            for layer in layers:
                layer.bn1 = IBN(planes, self.norm)
        return nn.Sequential(*layers)

    def _build_non_local(self, block, layers: List[int], nl_layers: List[int]) -> None:
        # fast-reid places the non-local blocks after the last blocks of each stage
        self.nl_indices = [sorted(layers[s] - (i + 1) for i in range(nl_layers[s])) for s in range(4)]
        for stage in range(4):
            channels = self.base * 2**stage * block.expansion
            setattr(self, f"NL_{stage + 1}", nn.ModuleList(NonLocal(channels, self.norm) for _ in range(nl_layers[stage])))

    def _stage_output(self, stage: int) -> str:
        """Module whose output is the stage's output: the last non-local block when the stage has them
        (fast-reid puts one after the stage's last block), else the stage itself."""
        nl_at = self.nl_indices[stage]
        return f"NL_{stage + 1}.{len(nl_at) - 1}" if nl_at else f"layer{stage + 1}"

    def _init_weights(self, zero_init_residual: bool = False) -> None:
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, (nn.BatchNorm2d, nn.SyncBatchNorm)) and module.weight is not None:
                nn.init.constant_(module.weight, 1.0)
                nn.init.constant_(module.bias, 0.0)
        if zero_init_residual:
            # every residual block starts as the identity (its last BN scales the branch by 0): deep bottleneck
            # stacks trained from scratch then start as shallow networks (Goyal et al. 2017, "Accurate, Large
            # Minibatch SGD", section 5.1)
            for module in self.modules():
                if isinstance(module, Bottleneck):
                    nn.init.constant_(module.bn3.weight, 0.0)
                elif isinstance(module, BasicBlock):
                    nn.init.constant_(module.bn2.weight, 0.0)
        for stage in range(4):
            for nl in getattr(self, f"NL_{stage + 1}", []):
                nn.init.constant_(nl.W[1].weight, 0.0)  # non-local blocks start as identity
                nn.init.constant_(nl.W[1].bias, 0.0)

    def _run_stage(self, stage: int, x: torch.Tensor) -> torch.Tensor:
        nl_blocks, nl_at = getattr(self, f"NL_{stage + 1}", None), self.nl_indices[stage]
        layer = getattr(self, f"layer{stage + 1}")
        if not nl_at:
            return layer(x)  # call the stage itself so forward hooks on ``layerN`` fire
        for i, block in enumerate(layer):
            x = block(x)
            if nl_at and i in nl_at:
                x = nl_blocks[nl_at.index(i)](x)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        for stage in range(4):
            x = self._run_stage(stage, x)
        return x


@BACKBONES.register("build_resnet_backbone")
def build_resnet_backbone(cfg: CfgNode, pretrained: bool = False, with_nl: Optional[bool] = None) -> ResNetBackbone:
    """fast-reid's builder name; reads MODEL.BACKBONE.{DEPTH,LAST_STRIDE,NORM,WITH_IBN,WITH_NL,WIDTH,
    ZERO_INIT_RESIDUAL} and, when ``pretrained``, initialises from PRETRAIN_PATH if PRETRAIN is True (see
    ``pretrained.resolve_pretrain_path``). ``with_nl`` overrides WITH_NL (MGN builds its trunk without them)."""
    bb = cfg.MODEL.BACKBONE
    with_nl = bb.WITH_NL if with_nl is None else with_nl
    backbone = ResNetBackbone(bb.DEPTH, bb.LAST_STRIDE, bb.NORM, bb.WITH_IBN, with_nl, bb.WIDTH, bb.ZERO_INIT_RESIDUAL)
    pretrain_path = resolve_pretrain_path(cfg) if pretrained else ""
    if pretrain_path:
        load_pretrained_resnet(backbone, pretrain_path)
    return backbone
