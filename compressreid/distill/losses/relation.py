"""Relation losses on batch embeddings: RKD distance/angle, similarity-preserving, PKT, listwise ranking.

They compare how samples relate to each other, never the vectors themselves, so student and teacher
may have any dimensions and any identity sets.
"""

from __future__ import annotations

from typing import List, Tuple

import torch
import torch.nn.functional as F
from yacs.config import CfgNode

from compressreid.distill.registry import (DISTILL_LOSSES, DistillLoss, DistillView, ModelInfo, TapRequest,
                                           resolve_stage)
from compressreid.errors import ConfigError


def off_diagonal(matrix: torch.Tensor) -> torch.Tensor:
    """[B, B] -> [B, B-1]: each row without its diagonal entry (a sample is not its own neighbour)."""
    b = matrix.shape[0]
    return matrix[~torch.eye(b, dtype=torch.bool, device=matrix.device)].view(b, b - 1)


def _zero(x: torch.Tensor) -> torch.Tensor:
    return x.sum() * 0.0  # keeps the graph connected when a batch is too small for the relation


def _cosine_matrix(x: torch.Tensor) -> torch.Tensor:
    x = F.normalize(x, dim=1)
    return x @ x.t()


def rkd_distance_potential(x: torch.Tensor) -> torch.Tensor:
    """Pairwise distances over ordered pairs i != j, divided by their mean (Park et al. 2019, eq. 4)."""
    d = off_diagonal(torch.cdist(x, x))
    return d / d.mean().clamp_min(1e-12)


def rkd_angle_potential(x: torch.Tensor) -> torch.Tensor:
    """cos of the angle at x_j between x_i and x_k, for every ordered triple of distinct samples (eq. 5)."""
    b = x.shape[0]
    e = F.normalize(x.unsqueeze(0) - x.unsqueeze(1), dim=2)  # e[j, i] = (x_i - x_j) / |x_i - x_j|
    cos = torch.bmm(e, e.transpose(1, 2))  # cos[j, i, k] = <e_ji, e_jk>
    eye = torch.eye(b, dtype=torch.bool, device=x.device)
    distinct = ~(eye.unsqueeze(2) | eye.unsqueeze(1) | eye.unsqueeze(0))  # j != i, j != k, i != k
    return cos[distinct]


class _EmbeddingRelation(DistillLoss):
    """A relation loss on the embeddings with one SCALE option."""

    def __init__(self, scale: float = 1.0):
        super().__init__()
        self.scale = float(scale)

    @classmethod
    def from_config(cls, node: CfgNode, student: ModelInfo, teacher: ModelInfo):
        return cls(node.SCALE)


@DISTILL_LOSSES.register()
class RKDDistance(_EmbeddingRelation):
    """RKD-D (Park et al., CVPR 2019): Huber (smooth-L1, delta 1) between mean-normalised pairwise distances.

    Averaged over ordered pairs i != j; the authors' code averages over all B^2 entries including the
    zero diagonal, i.e. (B-1)/B times this value.
    """

    config_key = "RKD_D"

    def forward(self, student: DistillView, teacher: DistillView) -> torch.Tensor:
        if student.embedding.shape[0] < 2:
            return _zero(student.embedding)
        s = rkd_distance_potential(student.embedding)
        t = rkd_distance_potential(teacher.embedding.detach())
        return self.scale * F.smooth_l1_loss(s, t, beta=1.0)


@DISTILL_LOSSES.register()
class RKDAngle(_EmbeddingRelation):
    """RKD-A (Park et al., CVPR 2019): Huber between the cosines of angles formed by sample triples.

    Averaged over ordered triples of distinct samples (the authors' code includes degenerate triples).
    """

    config_key = "RKD_A"

    def forward(self, student: DistillView, teacher: DistillView) -> torch.Tensor:
        if student.embedding.shape[0] < 3:
            return _zero(student.embedding)
        s = rkd_angle_potential(student.embedding)
        t = rkd_angle_potential(teacher.embedding.detach())
        return self.scale * F.smooth_l1_loss(s, t, beta=1.0)


def sp_gram(x: torch.Tensor) -> torch.Tensor:
    """Tung & Mori (ICCV 2019), eq. 2-3: G = Q Q^T over flattened activations, each row L2-normalised."""
    q = x.flatten(1)
    return F.normalize(q @ q.t(), dim=1)


@DISTILL_LOSSES.register()
class SimilarityPreserving(DistillLoss):
    """SP: ||G_s - G_t||_F^2 / B^2 (Tung & Mori 2019, eq. 4), on the embeddings or on tapped stages.

    With STAGES set, each listed stage pair (same index in both models) adds one term, as the paper sums
    over layer pairs.
    """

    config_key = "SP"

    def __init__(self, pairs: List[Tuple[str, str]] = (), scale: float = 1.0):
        super().__init__()
        self.pairs, self.scale = list(pairs), float(scale)
        self.feature_taps = TapRequest(tuple(s for s, _ in self.pairs), tuple(t for _, t in self.pairs))

    @classmethod
    def from_config(cls, node: CfgNode, student: ModelInfo, teacher: ModelInfo) -> "SimilarityPreserving":
        key = "DISTILL.LOSSES.SP.STAGES"
        pairs = [(resolve_stage(student, i, key).module, resolve_stage(teacher, i, key).module) for i in node.STAGES]
        return cls(pairs, node.SCALE)

    @staticmethod
    def _term(s: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        b = s.shape[0]
        return (sp_gram(s) - sp_gram(t.detach())).pow(2).sum() / b**2

    def forward(self, student: DistillView, teacher: DistillView) -> torch.Tensor:
        if not self.pairs:
            return self.scale * self._term(student.embedding, teacher.embedding)
        terms = [self._term(student.features[s], teacher.features[t]) for s, t in self.pairs]
        return self.scale * torch.stack(terms).sum()


def pkt_probabilities(x: torch.Tensor) -> torch.Tensor:
    """p(j|i) = K(x_i, x_j) / sum_{k != i} K(x_i, x_k), K = (cos + 1) / 2 (Passalis & Tefas 2018, eq. 8-9)."""
    kernel = off_diagonal((_cosine_matrix(x) + 1) / 2)
    return kernel / kernel.sum(dim=1, keepdim=True).clamp_min(1e-12)


@DISTILL_LOSSES.register()
class PKT(_EmbeddingRelation):
    """Probabilistic knowledge transfer: mean over anchors i of KL(p_t(.|i) || p_s(.|i)), self excluded.

    Passalis & Tefas (ECCV 2018), eq. 10, with the cosine kernel and the 1e-7 guard of the authors' code;
    their code also keeps j = i and averages over all B^2 entries, the paper (followed here) does not.
    """

    config_key = "PKT"
    eps = 1e-7

    def forward(self, student: DistillView, teacher: DistillView) -> torch.Tensor:
        if student.embedding.shape[0] < 2:
            return _zero(student.embedding)
        p_s = pkt_probabilities(student.embedding)
        p_t = pkt_probabilities(teacher.embedding.detach())
        kl = p_t * (torch.log(p_t + self.eps) - torch.log(p_s + self.eps))
        return self.scale * kl.sum(dim=1).mean()


@DISTILL_LOSSES.register()
class ListwiseRanking(DistillLoss):
    """Listwise ranking distillation: per anchor, softmax over the other samples' cosine similarities
    (temperature tau_t for the teacher, tau_s for the student); mean over anchors of KL(teacher || student).

    The ListNet top-one formulation (Cao et al. 2007) applied to the batch's similarity lists, as in
    ranking distillation for retrieval; it transfers the teacher's neighbour ordering around each anchor.
    """

    config_key = "LISTWISE"

    def __init__(self, student_temperature: float = 0.1, teacher_temperature: float = 0.1, scale: float = 1.0):
        super().__init__()
        if student_temperature <= 0 or teacher_temperature <= 0:
            raise ConfigError("DISTILL.LOSSES.LISTWISE temperatures must be positive, got "
                              f"{student_temperature} and {teacher_temperature}")
        self.tau_s, self.tau_t, self.scale = float(student_temperature), float(teacher_temperature), float(scale)

    @classmethod
    def from_config(cls, node: CfgNode, student: ModelInfo, teacher: ModelInfo) -> "ListwiseRanking":
        return cls(node.STUDENT_TEMPERATURE, node.TEACHER_TEMPERATURE, node.SCALE)

    def forward(self, student: DistillView, teacher: DistillView) -> torch.Tensor:
        if student.embedding.shape[0] < 2:
            return _zero(student.embedding)
        log_q = F.log_softmax(off_diagonal(_cosine_matrix(student.embedding)) / self.tau_s, dim=1)
        log_p = F.log_softmax(off_diagonal(_cosine_matrix(teacher.embedding.detach())) / self.tau_t, dim=1)
        return self.scale * F.kl_div(log_q, log_p, log_target=True, reduction="batchmean")
