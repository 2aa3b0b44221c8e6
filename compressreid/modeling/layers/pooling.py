"""Global pooling layers by fast-reid's names: average, max, GeM with fixed or learnable p."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from compressreid.errors import ConfigError


class GeneralizedMeanPooling(nn.Module):
    """GeM pooling (Radenovic et al.) with a fixed exponent p."""

    def __init__(self, p: float = 3.0, eps: float = 1e-6):
        super().__init__()
        self.p = p
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.adaptive_avg_pool2d(x.clamp(min=self.eps).pow(self.p), 1).pow(1.0 / self.p)


class GeneralizedMeanPoolingP(GeneralizedMeanPooling):
    """GeM pooling with a learnable exponent (parameter name ``p`` as in fast-reid)."""

    def __init__(self, p: float = 3.0, eps: float = 1e-6):
        super().__init__(p, eps)
        self.p = nn.Parameter(torch.ones(1) * p)


def build_pooling(name: str) -> nn.Module:
    """Pooling layer by fast-reid's POOL_LAYER names."""
    layers = {
        "GlobalAvgPool": lambda: nn.AdaptiveAvgPool2d(1),
        "GlobalMaxPool": lambda: nn.AdaptiveMaxPool2d(1),
        "GeneralizedMeanPooling": GeneralizedMeanPooling,
        "GeneralizedMeanPoolingP": GeneralizedMeanPoolingP,
        "Identity": nn.Identity,
    }
    if name not in layers:
        raise ConfigError(f"MODEL.HEADS.POOL_LAYER '{name}' is not supported; expected one of {sorted(layers)}")
    return layers[name]()
