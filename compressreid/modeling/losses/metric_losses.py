"""Metric-learning losses on batch features: triplet (batch-hard / weighted, margin / soft), circle, cosface."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from compressreid.modeling.contract import BranchOutput
from compressreid.modeling.losses.registry import LOSSES


def euclidean_dist(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return torch.cdist(x, y).clamp(min=1e-12)


def _masks(targets: torch.Tensor):
    same = targets.unsqueeze(0) == targets.unsqueeze(1)
    return same.float(), (~same).float()


@LOSSES.register()
class TripletLoss(nn.Module):
    """Triplet loss (Hermans et al., 2017). margin=0 uses the soft-margin form log(1 + exp(-(dn - dp)))."""

    def __init__(self, margin: float = 0.3, norm_feat: bool = False, hard_mining: bool = True, scale: float = 1.0):
        super().__init__()
        self.margin, self.norm_feat, self.hard_mining, self.scale = margin, norm_feat, hard_mining, scale

    @classmethod
    def from_config(cls, cfg) -> "TripletLoss":
        t = cfg.MODEL.LOSSES.TRI
        return cls(t.MARGIN, t.NORM_FEAT, t.HARD_MINING, t.SCALE)

    def forward(self, branch: BranchOutput, targets: torch.Tensor) -> torch.Tensor:
        if not branch.metric_loss:  # e.g. MGN's single stripes (see BranchOutput.metric_loss)
            return branch.feature.new_zeros(())
        feats = F.normalize(branch.feature, dim=1) if self.norm_feat else branch.feature
        dist = euclidean_dist(feats, feats)
        is_pos, is_neg = _masks(targets)
        if self.hard_mining:
            dist_ap = (dist * is_pos - 1e9 * is_neg).max(dim=1).values
            dist_an = (dist + 1e9 * is_pos).min(dim=1).values
        else:  # softmax-weighted mining: hard examples weigh more, every pair contributes
            w_ap = torch.softmax(dist * is_pos - 1e9 * is_neg, dim=1) * is_pos
            w_an = torch.softmax(-dist * is_neg - 1e9 * is_pos, dim=1) * is_neg
            dist_ap, dist_an = (dist * w_ap).sum(1), (dist * w_an).sum(1)
        if self.margin > 0:
            loss = F.margin_ranking_loss(dist_an, dist_ap, torch.ones_like(dist_an), margin=self.margin)
        else:
            loss = F.softplus(dist_ap - dist_an).mean()
        return self.scale * loss


class _PairwiseLoss(nn.Module):
    def __init__(self, margin: float, gamma: float, scale: float):
        super().__init__()
        self.margin, self.gamma, self.scale = margin, gamma, scale

    def _similarities(self, branch: BranchOutput, targets: torch.Tensor):
        feats = F.normalize(branch.feature, dim=1)
        sim = feats @ feats.t()
        is_pos, is_neg = _masks(targets)
        is_pos = is_pos - torch.eye(len(targets), device=sim.device)  # an anchor is not its own positive
        return sim, is_pos, is_neg


@LOSSES.register()
class CircleLoss(_PairwiseLoss):
    """Circle loss, pairwise form (Sun et al., CVPR 2020)."""

    @classmethod
    def from_config(cls, cfg) -> "CircleLoss":
        c = cfg.MODEL.LOSSES.CIRCLE
        return cls(c.MARGIN, c.GAMMA, c.SCALE)

    def forward(self, branch: BranchOutput, targets: torch.Tensor) -> torch.Tensor:
        if not branch.metric_loss:  # e.g. MGN's single stripes (see BranchOutput.metric_loss)
            return branch.feature.new_zeros(())
        sim, is_pos, is_neg = self._similarities(branch, targets)
        alpha_p = torch.clamp_min(-sim.detach() + 1 + self.margin, 0.0)
        alpha_n = torch.clamp_min(sim.detach() + self.margin, 0.0)
        logit_p = -self.gamma * alpha_p * (sim - (1 - self.margin)) - 1e9 * (1 - is_pos)
        logit_n = self.gamma * alpha_n * (sim - self.margin) - 1e9 * (1 - is_neg)
        loss = F.softplus(torch.logsumexp(logit_p, dim=1) + torch.logsumexp(logit_n, dim=1)).mean()
        return self.scale * loss


@LOSSES.register()
class Cosface(_PairwiseLoss):
    """CosFace, pairwise form (the batch-level variant fast-reid calls ``Cosface``)."""

    @classmethod
    def from_config(cls, cfg) -> "Cosface":
        c = cfg.MODEL.LOSSES.COSFACE
        return cls(c.MARGIN, c.GAMMA, c.SCALE)

    def forward(self, branch: BranchOutput, targets: torch.Tensor) -> torch.Tensor:
        if not branch.metric_loss:  # e.g. MGN's single stripes (see BranchOutput.metric_loss)
            return branch.feature.new_zeros(())
        sim, is_pos, is_neg = self._similarities(branch, targets)
        logit_p = -self.gamma * sim - 1e9 * (1 - is_pos)
        logit_n = self.gamma * (sim + self.margin) - 1e9 * (1 - is_neg)
        loss = F.softplus(torch.logsumexp(logit_p, dim=1) + torch.logsumexp(logit_n, dim=1)).mean()
        return self.scale * loss
