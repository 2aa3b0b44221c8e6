"""Non-local block in fast-reid's layout (embedded-Gaussian variant with dot-product affinity / N)."""

from __future__ import annotations

import torch
from torch import nn

from compressreid.modeling.layers.norm import get_norm


class NonLocal(nn.Module):
    """Non-local block (Wang et al., CVPR 2018); zero-initialised output norm so it starts as identity.

    ``inter_channels`` is 1 by default because fast-reid's implementation computes
    ``reduc_ratio // reduc_ratio``; keeping it reproduces fast-reid's checkpoints and embeddings.
    """

    def __init__(self, in_channels: int, norm: str = "BN", inter_channels: int = 1):
        super().__init__()
        self.inter_channels = inter_channels
        self.g = nn.Conv2d(in_channels, inter_channels, 1)
        self.W = nn.Sequential(nn.Conv2d(inter_channels, in_channels, 1), get_norm(norm, in_channels))
        nn.init.constant_(self.W[1].weight, 0.0)
        nn.init.constant_(self.W[1].bias, 0.0)
        self.theta = nn.Conv2d(in_channels, inter_channels, 1)
        self.phi = nn.Conv2d(in_channels, inter_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch = x.shape[0]
        g_x = self.g(x).view(batch, self.inter_channels, -1).permute(0, 2, 1)
        theta_x = self.theta(x).view(batch, self.inter_channels, -1).permute(0, 2, 1)
        phi_x = self.phi(x).view(batch, self.inter_channels, -1)
        affinity = torch.matmul(theta_x, phi_x)
        affinity = affinity / affinity.shape[-1]
        y = torch.matmul(affinity, g_x).permute(0, 2, 1).contiguous()
        y = y.view(batch, self.inter_channels, *x.shape[2:])
        return self.W(y) + x
