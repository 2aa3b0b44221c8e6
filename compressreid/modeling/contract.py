"""The model contract shared by teachers and students: fixed output types and declared feature taps.

``model(images)`` always returns the eval embedding [B, D] (never a dict that depends on
``self.training``); ``model.forward_train(images, targets)`` returns a ``ModelOutput`` for losses.
Images are RGB float in 0-255, [B, 3, H, W]; normalisation happens inside the model.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Sequence

import torch
from torch import nn


@dataclass(frozen=True)
class FeatureInfo:
    """One feature tap: module path inside the model, output channels, stride w.r.t. the input."""

    module: str
    channels: int
    stride: int


@dataclass
class BranchOutput:
    """Outputs of one embedding branch (a Baseline has one; MGN has several).

    Attributes:
        embedding: eval embedding of the branch (post-BNNeck), [B, d].
        feature: feature for metric losses (before or after the BNNeck per NECK_FEAT), [B, d].
        logits: classifier outputs with margin and scale applied (for cross-entropy); None if no classifier.
        cls_logits: scaled logits without the margin (what logit distillation compares); None if no classifier.
        metric_loss: False makes metric losses (triplet, circle, cosface) skip the branch. MGN uses it as
            fast-reid does: metric losses on its global features and on each stripe group's concatenation
            (carried as ``feature`` by the group's first stripe), not on single stripes.
    """

    embedding: torch.Tensor
    feature: torch.Tensor
    logits: torch.Tensor | None = None
    cls_logits: torch.Tensor | None = None
    metric_loss: bool = True


@dataclass
class ModelOutput:
    """What ``forward_train`` returns: the eval embedding plus every branch's training outputs.

    ``aux`` holds model-specific tensors that model-specific losses read (e.g. HAA's ensemble gate).
    """

    embedding: torch.Tensor
    branches: List[BranchOutput] = field(default_factory=list)
    aux: Dict[str, torch.Tensor] = field(default_factory=dict)


class PixelNormalizer(nn.Module):
    """(x - mean) / std on the 0-255 scale, never modifying the caller's tensor.

    The buffers are not persistent, as in fast-reid v1, so state dicts stay compatible; they travel
    inside exported ONNX graphs as constants.
    """

    def __init__(self, mean: Sequence[float], std: Sequence[float]):
        super().__init__()
        self.register_buffer("pixel_mean", torch.tensor(list(mean), dtype=torch.float32).view(1, -1, 1, 1), False)
        self.register_buffer("pixel_std", torch.tensor(list(std), dtype=torch.float32).view(1, -1, 1, 1), False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return (images - self.pixel_mean) / self.pixel_std


class ReIDModel(nn.Module):
    """Base of every meta-architecture. Subclasses set ``feature_info`` and ``embedding_dim``."""

    feature_info: List[FeatureInfo]
    embedding_dim: int

    def forward(self, images: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def forward_train(self, images: torch.Tensor, targets: torch.Tensor | None = None) -> ModelOutput:
        raise NotImplementedError  # pragma: no cover - abstract
