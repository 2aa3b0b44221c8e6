"""Identity classification loss: cross-entropy with label smoothing on the head's margin logits."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from compressreid.errors import ConfigError
from compressreid.modeling.contract import BranchOutput
from compressreid.modeling.losses.registry import LOSSES


@LOSSES.register()
class CrossEntropyLoss(nn.Module):
    """Label-smoothed cross-entropy on ``branch.logits`` (which already carry CLS_LAYER's margin)."""

    def __init__(self, epsilon: float = 0.1, scale: float = 1.0):
        super().__init__()
        self.epsilon, self.scale = epsilon, scale

    @classmethod
    def from_config(cls, cfg) -> "CrossEntropyLoss":
        return cls(cfg.MODEL.LOSSES.CE.EPSILON, cfg.MODEL.LOSSES.CE.SCALE)

    def forward(self, branch: BranchOutput, targets: torch.Tensor) -> torch.Tensor:
        if branch.logits is None:
            raise ConfigError("CrossEntropyLoss needs a classifier: the model was built with 0 classes")
        return self.scale * F.cross_entropy(branch.logits, targets, label_smoothing=self.epsilon)
