"""Classifier margin layers: Linear, CosSoftmax (CosFace), ArcSoftmax (ArcFace), CircleSoftmax.

Each takes the raw logits (cosine similarities for the margin variants) and the targets and returns
the logits the cross-entropy sees. The weight matrix lives in the head (``heads.weight`` as fast-reid).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from compressreid.errors import ConfigError


class LinearLogits(nn.Module):
    """Plain softmax classifier: scale only."""

    normalized = False

    def __init__(self, scale: float = 1.0, margin: float = 0.0):
        super().__init__()
        self.s, self.m = float(scale), float(margin)

    def forward(self, logits: torch.Tensor, targets: torch.Tensor | None) -> torch.Tensor:
        return logits * self.s


class CosSoftmax(LinearLogits):
    """CosFace (Wang et al., 2018): s * (cos(theta) - m) for the target class."""

    normalized = True

    def forward(self, logits, targets):
        if targets is None:
            return logits * self.s
        return (logits - self.m * F.one_hot(targets, logits.shape[1]).to(logits.dtype)) * self.s


class ArcSoftmax(LinearLogits):
    """ArcFace (Deng et al., 2019): s * cos(theta + m) for the target class, easy-margin fallback."""

    normalized = True

    def forward(self, logits, targets):
        if targets is None:
            return logits * self.s
        cos = logits.clamp(-1.0 + 1e-7, 1.0 - 1e-7)
        with_margin = torch.cos(torch.acos(cos) + self.m)
        # past theta = pi - m, cos(theta + m) stops decreasing; fall back to a linear penalty there
        threshold, penalty = math.cos(math.pi - self.m), math.sin(math.pi - self.m) * self.m
        with_margin = torch.where(cos > threshold, with_margin, cos - penalty)
        one_hot = F.one_hot(targets, logits.shape[1]).bool()
        return torch.where(one_hot, with_margin, cos) * self.s


class CircleSoftmax(LinearLogits):
    """Circle loss in classification form (Sun et al., CVPR 2020), as fast-reid's CircleSoftmax."""

    normalized = True

    def forward(self, logits, targets):
        if targets is None:
            return logits * self.s
        alpha_p = torch.clamp_min(-logits.detach() + 1 + self.m, 0.0)
        alpha_n = torch.clamp_min(logits.detach() + self.m, 0.0)
        delta_p, delta_n = 1 - self.m, self.m
        one_hot = F.one_hot(targets, logits.shape[1]).bool()
        out = torch.where(one_hot, alpha_p * (logits - delta_p), alpha_n * (logits - delta_n))
        return out * self.s


CLASSIFIERS = {"Linear": LinearLogits, "CosSoftmax": CosSoftmax, "ArcSoftmax": ArcSoftmax, "CircleSoftmax": CircleSoftmax}


def build_classifier(name: str, scale: float, margin: float) -> LinearLogits:
    if name not in CLASSIFIERS:
        raise ConfigError(f"MODEL.HEADS.CLS_LAYER '{name}' is not supported; expected one of {sorted(CLASSIFIERS)}")
    return CLASSIFIERS[name](scale, margin)
