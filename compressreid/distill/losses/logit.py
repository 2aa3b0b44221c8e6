"""Logit distillation: temperature-softened KL (Hinton et al. 2015) or symmetric Jensen-Shannon."""

from __future__ import annotations

import math
from typing import List

import torch
import torch.nn.functional as F
from yacs.config import CfgNode

from compressreid.distill.registry import DISTILL_LOSSES, DistillLoss, DistillView, ModelInfo
from compressreid.errors import ConfigError

DIVERGENCES = ("kl", "js")


def kl_divergence(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """T^2 * mean_b KL(softmax(t/T) || softmax(s/T)) (Hinton et al. 2015: T^2 keeps gradients T-independent)."""
    log_p = F.log_softmax(teacher_logits / temperature, dim=1)
    log_q = F.log_softmax(student_logits / temperature, dim=1)
    return F.kl_div(log_q, log_p, log_target=True, reduction="batchmean") * temperature**2


def js_divergence(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """T^2 * mean_b [KL(P || M) + KL(Q || M)] / 2, M = (P + Q) / 2: symmetric and bounded by log 2 (x T^2)."""
    log_p = F.log_softmax(teacher_logits / temperature, dim=1)
    log_q = F.log_softmax(student_logits / temperature, dim=1)
    log_m = torch.logsumexp(torch.stack([log_p, log_q]), dim=0) - math.log(2.0)
    kl_pm = F.kl_div(log_m, log_p, log_target=True, reduction="batchmean")
    kl_qm = F.kl_div(log_m, log_q, log_target=True, reduction="batchmean")
    return 0.5 * (kl_pm + kl_qm) * temperature**2


@DISTILL_LOSSES.register()
class LogitKD(DistillLoss):
    """Match the student's class distribution to the teacher's, per branch.

    Branches pair one-to-one when both models have as many; a single-branch student distils from the
    mean of a multi-branch teacher's logits (e.g. MGN's branch classifiers as one ensemble).
    """

    config_key = "KD"
    needs_shared_classes = True

    def __init__(self, temperature: float = 4.0, divergence: str = "kl", scale: float = 1.0):
        super().__init__()
        if divergence not in DIVERGENCES:
            raise ConfigError(f"DISTILL.LOSSES.KD.DIVERGENCE '{divergence}' must be one of {DIVERGENCES}")
        if temperature <= 0:
            raise ConfigError(f"DISTILL.LOSSES.KD.TEMPERATURE must be positive, got {temperature}")
        self.temperature, self.divergence, self.scale = float(temperature), divergence, float(scale)

    @classmethod
    def from_config(cls, node: CfgNode, student: ModelInfo, teacher: ModelInfo) -> "LogitKD":
        return cls(node.TEMPERATURE, node.DIVERGENCE, node.SCALE)

    def _pairs(self, student: List[torch.Tensor], teacher: List[torch.Tensor]):
        if len(student) == len(teacher):
            return list(zip(student, teacher))
        if len(student) == 1:
            return [(student[0], torch.stack(teacher).mean(0))]
        raise ConfigError(f"LogitKD cannot pair {len(student)} student branches with {len(teacher)} teacher branches")

    def forward(self, student: DistillView, teacher: DistillView) -> torch.Tensor:
        if student.logits is None or teacher.logits is None:
            which = "student" if student.logits is None else "teacher"
            raise ConfigError(f"LogitKD needs classifier logits but the {which} returned none")
        divergence = kl_divergence if self.divergence == "kl" else js_divergence
        terms = []
        for s, t in self._pairs(student.logits, [x.detach() for x in teacher.logits]):
            if s.shape != t.shape:
                raise ConfigError(f"LogitKD: student logits {tuple(s.shape)} vs teacher {tuple(t.shape)}; "
                                  "the models classify different identity sets")
            terms.append(divergence(s, t, self.temperature))
        return self.scale * torch.stack(terms).mean()
