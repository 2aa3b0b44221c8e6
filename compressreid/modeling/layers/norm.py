"""Norm layers by name (fast-reid's ``get_norm`` names) and IBN-a."""

from __future__ import annotations

import torch
from torch import nn

from compressreid.errors import ConfigError


def get_norm(norm: str, channels: int) -> nn.Module:
    """'BN' -> BatchNorm2d, 'syncBN' -> SyncBatchNorm (converted from BN only under DDP)."""
    if norm == "BN":
        return nn.BatchNorm2d(channels)
    if norm == "syncBN":
        return nn.SyncBatchNorm(channels)
    raise ConfigError(f"norm '{norm}' is not supported; expected 'BN' or 'syncBN'")


class IBN(nn.Module):
    """IBN-a (Pan et al., ECCV 2018): InstanceNorm on the first half of the channels, BN on the rest.

    Parameter names (``IN``, ``BN``) match fast-reid and IBN-Net checkpoints.
    """

    def __init__(self, planes: int, norm: str = "BN"):
        super().__init__()
        self.half = int(planes * 0.5)
        self.IN = nn.InstanceNorm2d(self.half, affine=True)
        self.BN = get_norm(norm, planes - self.half)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        first, second = torch.split(x, [self.half, x.shape[1] - self.half], dim=1)
        return torch.cat([self.IN(first.contiguous()), self.BN(second.contiguous())], dim=1)
