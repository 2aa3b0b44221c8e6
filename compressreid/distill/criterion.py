"""DistillationCriterion: the weighted sum of distillation losses (per teacher) and the supervised ReID losses."""

from __future__ import annotations

from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import torch
from torch import nn
from yacs.config import CfgNode

from compressreid.distill.registry import DistillLoss, DistillView, ModelInfo, build_distill_loss
from compressreid.errors import ConfigError
from compressreid.modeling.contract import ModelOutput
from compressreid.modeling.losses import ReIDCriterion, build_criterion


class DistillationCriterion(nn.Module):
    """Named loss terms of one step, for the loop to sum and the hooks to log.

    Each teacher has its own instance of every distillation loss (adapters and projections depend on the
    teacher's channels and dims); a term is the loss times its teacher's weight, named
    ``distill/<loss>`` (``distill/<loss>/t<i>`` with several teachers). Supervised terms keep their names.

    Args:
        per_teacher: for each teacher, its (name, loss) pairs.
        teacher_weights: one weight per teacher.
        supervised: the student's own ReID criterion, or None to train on distillation alone.
    """

    def __init__(self, per_teacher: Sequence[Sequence[Tuple[str, DistillLoss]]], teacher_weights: Sequence[float],
                 supervised: Optional[ReIDCriterion] = None):
        super().__init__()
        if len(per_teacher) != len(teacher_weights):
            raise ConfigError(f"{len(per_teacher)} teachers' losses but {len(teacher_weights)} teacher weights")
        self.names = [[name for name, _ in losses] for losses in per_teacher]
        self.losses = nn.ModuleList(nn.ModuleList(loss for _, loss in losses) for losses in per_teacher)
        self.teacher_weights = [float(w) for w in teacher_weights]
        self.supervised = supervised

    def student_taps(self) -> List[str]:
        """Student module paths any loss reads (the task hooks only these)."""
        paths = [p for losses in self.losses for loss in losses for p in loss.feature_taps.student]
        return list(dict.fromkeys(paths))

    def teacher_taps(self, index: int) -> List[str]:
        """Module paths of teacher ``index`` that its losses read."""
        return list(dict.fromkeys(p for loss in self.losses[index] for p in loss.feature_taps.teacher))

    def forward(self, output: ModelOutput, student: DistillView, teachers: Sequence[DistillView],
                targets: torch.Tensor, batch: Optional[Mapping[str, object]] = None) -> Dict[str, torch.Tensor]:
        if len(teachers) != len(self.losses):
            raise ValueError(f"got {len(teachers)} teacher views for {len(self.losses)} teachers")
        terms: Dict[str, torch.Tensor] = {}
        if self.supervised is not None:
            terms.update(self.supervised(output, targets, batch))
        several = len(teachers) > 1
        # fp32 even under the step's autocast: distances, Gram matrices and angles lose too much in fp16/bf16
        with torch.autocast(student.embedding.device.type, enabled=False):
            for i, (view, names, losses) in enumerate(zip(teachers, self.names, self.losses)):
                for name, loss in zip(names, losses):
                    key = f"distill/{name}/t{i}" if several else f"distill/{name}"
                    terms[key] = self.teacher_weights[i] * loss(student, view)
        return terms


def _gallery_compatible_node(losses: CfgNode, names: List[str], teachers: Sequence[ModelInfo]) -> CfgNode:
    """Gallery-compatible mode: the student embeds into the teacher's own space (no projection), so its
    gallery features can be searched against the teacher's. Returns the loss node with that enforced."""
    if len(teachers) != 1:
        raise ConfigError(f"DISTILL.GALLERY_COMPATIBLE aligns the student with one teacher's embedding space, "
                          f"got {len(teachers)} teachers")
    if "EmbeddingRegression" not in names:
        raise ConfigError("DISTILL.GALLERY_COMPATIBLE needs EmbeddingRegression in DISTILL.LOSSES.NAME "
                          "to pull the student into the teacher's embedding space")
    if losses.EMBED.PROJECTION == "linear":
        raise ConfigError("DISTILL.GALLERY_COMPATIBLE forbids DISTILL.LOSSES.EMBED.PROJECTION 'linear': a projection "
                          "would align a transformed embedding, not the one the gallery stores")
    node = losses.clone()  # a derived copy; the user's config is never modified
    node.defrost()
    node.EMBED.PROJECTION = "none"
    return node


def build_distillation_criterion(cfg: CfgNode, student: ModelInfo, teachers: Sequence[ModelInfo],
                                 teacher_weights: Sequence[float]) -> DistillationCriterion:
    """The criterion DISTILL describes, for these student and teacher infos."""
    d = cfg.DISTILL
    names = list(d.LOSSES.NAME)
    if not names:
        raise ConfigError("DISTILL.LOSSES.NAME is empty; name at least one distillation loss, e.g. LogitKD")
    if len(set(names)) != len(names):
        raise ConfigError(f"DISTILL.LOSSES.NAME lists a loss twice: {names}")
    node = _gallery_compatible_node(d.LOSSES, names, teachers) if d.GALLERY_COMPATIBLE else d.LOSSES
    per_teacher = [[(name, build_distill_loss(name, node, student, teacher)) for name in names]
                   for teacher in teachers]
    supervised = build_criterion(cfg) if d.SUPERVISED else None
    return DistillationCriterion(per_teacher, teacher_weights, supervised)
