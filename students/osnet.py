"""OSNet backbones (Zhou et al., ICCV 2019) with the IBN and AIN (TPAMI 2021) variants, at any width.

Registered as ``osnet`` (MODEL.BACKBONE.WITH_IBN selects OSNet-IBN) and ``osnet_ain``; MODEL.BACKBONE.WIDTH
scales the channels (1.0, 0.75, 0.5, 0.25 give the published x1_0 ... x0_25 models exactly).
"""

from __future__ import annotations

import re
from typing import List, Optional, Sequence, Tuple

import torch
from torch import nn
from yacs.config import CfgNode

from compressreid.checkpoint import LoadReport
from compressreid.modeling.backbones.pretrained import resolve_pretrain_path
from compressreid.errors import ConfigError
from compressreid.modeling.backbones.registry import BACKBONES
from compressreid.modeling.contract import FeatureInfo
from compressreid.students.local_weights import load_backbone_weights
from compressreid.students.osnet_blocks import IN_NONE, IN_OUTPUT, IN_RESIDUAL, ConvNormAct, OSBlock

# Stem and three stage widths of OSNet x1.0; two OS blocks per stage (both papers).
BASE_CHANNELS = (64, 256, 384, 512)
BLOCKS_PER_STAGE = 2

# Where each block of each stage carries an instance norm, and whether the stem uses IN instead of BN.
PLAIN = (False, ((IN_NONE,) * 2,) * 3)
# OSNet-IBN (ICCV'19 supplementary, following IBN-Net): IN in the stem and after each stage-1 block.
IBN = (True, ((IN_OUTPUT,) * 2, (IN_NONE,) * 2, (IN_NONE,) * 2))
# OSNet-AIN: the instance norms the TPAMI'21 architecture search kept (stem + 4 of 6 blocks).
AIN = (True, ((IN_RESIDUAL, IN_RESIDUAL), (IN_NONE, IN_RESIDUAL), (IN_RESIDUAL, IN_NONE)))


def scaled_channels(width: float) -> List[int]:
    """OSNet channels at ``width``, rounded to a multiple of 4 (the OS-block bottleneck reduction)."""
    if width <= 0:
        raise ConfigError(f"MODEL.BACKBONE.WIDTH must be positive, got {width}")
    return [max(4, int(round(c * width / 4)) * 4) for c in BASE_CHANNELS]


class OSNetBackbone(nn.Module):
    """OSNet trunk up to ``conv5`` (the 1x1 conv before global pooling); returns the stride-16 feature map.

    The stem max-pool is 3x3/2 with padding 1, as in the paper's reference. Padding a max-pool is a known
    INT8 pitfall (some runtimes pad with 0 rather than -inf after quantization); it is kept for fidelity
    to the published weights and left to the quantization stage to check.
    """

    def __init__(self, width: float = 1.0, variant: Tuple[bool, Sequence[Sequence[str]]] = PLAIN, norm: str = "BN"):
        super().__init__()
        c = scaled_channels(width)
        stem_in, stage_in = variant
        self.conv1 = ConvNormAct(3, c[0], 7, stride=2, padding=3, norm=norm, use_in=stem_in)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        self.conv2 = self._make_stage(c[0], c[1], stage_in[0], norm)
        # transitions: 1x1 conv + 2x2 average pool (halve resolution between stages)
        self.pool2 = nn.Sequential(ConvNormAct(c[1], c[1], norm=norm), nn.AvgPool2d(2, stride=2))
        self.conv3 = self._make_stage(c[1], c[2], stage_in[1], norm)
        self.pool3 = nn.Sequential(ConvNormAct(c[2], c[2], norm=norm), nn.AvgPool2d(2, stride=2))
        self.conv4 = self._make_stage(c[2], c[3], stage_in[2], norm)
        self.conv5 = ConvNormAct(c[3], c[3], norm=norm)
        self.out_channels = c[3]
        # stage outputs before each transition, so the strides (4, 8, 16, 16) line up with ResNet's taps
        self.feature_info = [FeatureInfo("conv2", c[1], 4), FeatureInfo("conv3", c[2], 8),
                             FeatureInfo("conv4", c[3], 16), FeatureInfo("conv5", c[3], 16)]
        self._init_weights()

    @staticmethod
    def _make_stage(in_channels: int, out_channels: int, in_places: Sequence[str], norm: str) -> nn.Sequential:
        blocks = [OSBlock(in_channels if i == 0 else out_channels, out_channels, place, norm)
                  for i, place in enumerate(in_places)]
        return nn.Sequential(*blocks)

    def _init_weights(self) -> None:
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
                if module.bias is not None:
                    nn.init.constant_(module.bias, 0.0)
            elif isinstance(module, (nn.BatchNorm2d, nn.SyncBatchNorm, nn.InstanceNorm2d)) and module.affine:
                nn.init.constant_(module.weight, 1.0)
                nn.init.constant_(module.bias, 0.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.conv1(x))
        x = self.pool2(self.conv2(x))
        x = self.pool3(self.conv3(x))
        return self.conv5(self.conv4(x))


# -- local ImageNet initialisation -----------------------------------------------------------------------------

_DROPPED = re.compile(r"^(fc|classifier)\.")  # the ImageNet embedding layer and classifier
_V1_STREAM = re.compile(r"^(conv[234]\.\d+)\.conv2([abcd])\.(?:(\d+)\.)?(.*)$")
_V1_TRANSITION = re.compile(rf"^conv([23])\.{BLOCKS_PER_STAGE}\.0\.(.*)$")


def osnet_key_map(key: str) -> Optional[str]:
    """Map a key of a published OSNet / OSNet-IBN / OSNet-AIN state dict to this backbone's key.

    OSNet-AIN files already use our names. The ICCV'19 files name the streams ``conv2a`` (one layer) and
    ``conv2b.{i}`` ... ``conv2d.{i}``, and keep each transition as the last element of its stage.
    """
    if _DROPPED.match(key):
        return None
    stream = _V1_STREAM.match(key)
    if stream:
        block, letter, layer, rest = stream.groups()
        return f"{block}.conv2.{'abcd'.index(letter)}.layers.{layer or 0}.{rest}"
    transition = _V1_TRANSITION.match(key)
    if transition:
        return f"pool{transition.group(1)}.0.{transition.group(2)}"
    return key


def _build(cfg: CfgNode, variant, pretrained: bool = False) -> OSNetBackbone:
    bb = cfg.MODEL.BACKBONE
    if bb.LAST_STRIDE != 1:
        raise ConfigError(f"OSNet's last stage has no stride; MODEL.BACKBONE.LAST_STRIDE must be 1, "
                          f"got {bb.LAST_STRIDE}")
    if bb.WITH_NL:
        raise ConfigError("MODEL.BACKBONE.WITH_NL is not supported by OSNet backbones")
    backbone = OSNetBackbone(bb.WIDTH, variant, bb.NORM)
    path = resolve_pretrain_path(cfg) if pretrained else ""
    if path:
        load_pretrained(backbone, path)
    return backbone


def load_pretrained(backbone: OSNetBackbone, path: str) -> LoadReport:
    """Initialise from a local torchreid-format ImageNet file (any variant); reports what did not transfer."""
    return load_backbone_weights(backbone, path, osnet_key_map)


@BACKBONES.register("osnet")
def build_osnet_backbone(cfg: CfgNode, pretrained: bool = False) -> OSNetBackbone:
    """OSNet at MODEL.BACKBONE.WIDTH; MODEL.BACKBONE.WITH_IBN gives OSNet-IBN."""
    return _build(cfg, IBN if cfg.MODEL.BACKBONE.WITH_IBN else PLAIN, pretrained)


@BACKBONES.register("osnet_ain")
def build_osnet_ain_backbone(cfg: CfgNode, pretrained: bool = False) -> OSNetBackbone:
    """OSNet-AIN at MODEL.BACKBONE.WIDTH (its instance norms are fixed by the architecture search)."""
    if cfg.MODEL.BACKBONE.WITH_IBN:
        raise ConfigError("osnet_ain places its own instance norms; MODEL.BACKBONE.WITH_IBN must be False")
    return _build(cfg, AIN, pretrained)
