"""OSNet building blocks: conv-norm-act units, lite 3x3 streams, the unified aggregation gate, the OS block.

Module names follow the published OSNet-AIN weights (``conv1.conv``, ``conv2.{t}.layers.{i}``, ``gate.fc1``,
``conv3``, ``downsample``, ``IN``) so ImageNet initialisations load through a short, explicit key map.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from compressreid.errors import ConfigError
from compressreid.modeling.layers.norm import get_norm

# Where an OS block carries an instance norm (OSNet-IBN and OSNet-AIN put it in different places).
IN_NONE = ""
IN_OUTPUT = "output"  # OSNet-IBN: IN on the block output, after the residual sum, before the ReLU
IN_RESIDUAL = "residual"  # OSNet-AIN: IN replaces the BN closing the residual branch, before the sum
_IN_PLACES = (IN_NONE, IN_OUTPUT, IN_RESIDUAL)


def instance_norm(channels: int) -> nn.InstanceNorm2d:
    """Affine instance norm, as both OSNet papers use."""
    return nn.InstanceNorm2d(channels, affine=True)


class ConvNormAct(nn.Module):
    """Conv (no bias) -> norm -> optional ReLU; ``bn`` may be an instance norm (OSNet-IBN/AIN stems)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 1, stride: int = 1,
                 padding: int = 0, norm: str = "BN", use_in: bool = False, act: bool = True):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride, padding=padding, bias=False)
        self.bn = instance_norm(out_channels) if use_in else get_norm(norm, out_channels)
        self.relu = nn.ReLU() if act else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.bn(self.conv(x)))


class Conv1x1Linear(nn.Module):
    """1x1 conv with an optional BN and no activation (closes residual branches and shortcuts)."""

    def __init__(self, in_channels: int, out_channels: int, norm: str = "BN", with_bn: bool = True):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, 1, bias=False)
        self.bn = get_norm(norm, out_channels) if with_bn else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.conv(x))


class LightConv3x3(nn.Module):
    """Lite 3x3: pointwise 1x1 (linear) then depthwise 3x3, one norm and ReLU after both (OSNet Fig. 3)."""

    def __init__(self, in_channels: int, out_channels: int, norm: str = "BN"):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 1, bias=False)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, groups=out_channels, bias=False)
        self.bn = get_norm(norm, out_channels)
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.bn(self.conv2(self.conv1(x))))


class LightConvStream(nn.Module):
    """``depth`` stacked lite 3x3 layers: a stream whose receptive field grows by 2 pixels per layer."""

    def __init__(self, channels: int, depth: int, norm: str = "BN"):
        super().__init__()
        self.layers = nn.Sequential(*(LightConv3x3(channels, channels, norm) for _ in range(depth)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class ChannelGate(nn.Module):
    """Unified aggregation gate: GAP -> 1x1 (reduce 16x) -> ReLU -> 1x1 -> sigmoid, times the input.

    One instance is shared by every stream of a block (the paper's "unified" gate), so the same
    parameters weigh all scales.
    """

    def __init__(self, channels: int, reduction: int = 16):
        super().__init__()
        hidden = max(1, channels // reduction)  # tiny widths would otherwise give a 0-channel conv
        self.global_avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Conv2d(channels, hidden, 1, bias=True)
        self.relu = nn.ReLU()
        self.fc2 = nn.Conv2d(hidden, channels, 1, bias=True)
        self.gate_activation = nn.Sigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate = self.gate_activation(self.fc2(self.relu(self.fc1(self.global_avgpool(x)))))
        return x * gate


class OSBlock(nn.Module):
    """Omni-scale residual bottleneck: 1x1 -> T lite-3x3 streams of depth 1..T -> shared gate -> sum -> 1x1.

    Args:
        in_channels, out_channels: block input/output channels (out divisible by ``reduction``).
        instance_norm_at: "" (plain), "output" (OSNet-IBN) or "residual" (OSNet-AIN).
        streams: T, the number of scales (4 in both papers).
    """

    def __init__(self, in_channels: int, out_channels: int, instance_norm_at: str = IN_NONE, norm: str = "BN",
                 reduction: int = 4, streams: int = 4):
        super().__init__()
        if instance_norm_at not in _IN_PLACES:
            raise ConfigError(f"OSBlock instance_norm_at '{instance_norm_at}' must be one of {_IN_PLACES}")
        if out_channels % reduction:
            raise ConfigError(f"OSBlock out_channels {out_channels} must be divisible by {reduction}")
        mid = out_channels // reduction
        self.conv1 = ConvNormAct(in_channels, mid, norm=norm)
        self.conv2 = nn.ModuleList(LightConvStream(mid, depth, norm) for depth in range(1, streams + 1))
        self.gate = ChannelGate(mid)
        in_residual = instance_norm_at == IN_RESIDUAL
        self.conv3 = Conv1x1Linear(mid, out_channels, norm, with_bn=not in_residual)
        self.downsample = Conv1x1Linear(in_channels, out_channels, norm) if in_channels != out_channels else None
        self.instance_norm_at = instance_norm_at
        self.IN = instance_norm(out_channels) if instance_norm_at else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1 = self.conv1(x)
        x2 = self.gate(self.conv2[0](x1))
        for stream in self.conv2[1:]:
            x2 = x2 + self.gate(stream(x1))
        x3 = self.conv3(x2)
        if self.instance_norm_at == IN_RESIDUAL:
            x3 = self.IN(x3)
        identity = x if self.downsample is None else self.downsample(x)
        out = x3 + identity
        if self.instance_norm_at == IN_OUTPUT:
            out = self.IN(out)
        return F.relu(out)
