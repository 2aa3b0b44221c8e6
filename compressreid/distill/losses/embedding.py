"""Embedding regression: the student's embedding, through a learned projection when dims differ, to the teacher's."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from yacs.config import CfgNode

from compressreid.distill.registry import DISTILL_LOSSES, DistillLoss, DistillView, ModelInfo
from compressreid.errors import ConfigError

MODES = ("l2", "cosine")
PROJECTIONS = ("auto", "linear", "none")


@DISTILL_LOSSES.register()
class EmbeddingRegression(DistillLoss):
    """``l2``: mean squared error over all B x D entries; ``cosine``: mean over the batch of 1 - cos.

    The projection (a bias-free linear layer, student dim -> teacher dim) is a submodule, so the task's
    ``trainable_parameters`` hands it to the optimizer. Without a projection the student is trained into
    the teacher's embedding space itself (gallery-compatible mode).
    """

    config_key = "EMBED"

    def __init__(self, student_dim: int, teacher_dim: int, mode: str = "cosine", projection: str = "auto",
                 scale: float = 1.0):
        super().__init__()
        if mode not in MODES:
            raise ConfigError(f"DISTILL.LOSSES.EMBED.MODE '{mode}' must be one of {MODES}")
        if projection not in PROJECTIONS:
            raise ConfigError(f"DISTILL.LOSSES.EMBED.PROJECTION '{projection}' must be one of {PROJECTIONS}")
        if projection == "none" and student_dim != teacher_dim:
            raise ConfigError(f"DISTILL.LOSSES.EMBED.PROJECTION 'none' needs equal embedding dims, got student "
                              f"{student_dim} vs teacher {teacher_dim}; set the student's MODEL.HEADS.EMBEDDING_DIM "
                              f"to {teacher_dim}")
        linear = projection == "linear" or (projection == "auto" and student_dim != teacher_dim)
        self.projection = nn.Linear(student_dim, teacher_dim, bias=False) if linear else nn.Identity()
        self.mode, self.scale = mode, float(scale)

    @classmethod
    def from_config(cls, node: CfgNode, student: ModelInfo, teacher: ModelInfo) -> "EmbeddingRegression":
        return cls(student.embedding_dim, teacher.embedding_dim, node.MODE, node.PROJECTION, node.SCALE)

    def forward(self, student: DistillView, teacher: DistillView) -> torch.Tensor:
        projected, target = self.projection(student.embedding), teacher.embedding.detach()
        if self.mode == "l2":
            loss = F.mse_loss(projected, target)
        else:
            loss = (1 - F.cosine_similarity(projected, target, dim=1)).mean()
        return self.scale * loss
