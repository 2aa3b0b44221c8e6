"""LOSSES registry and the weighted-sum criterion.

Contract of a loss: ``cls.from_config(cfg) -> nn.Module`` returning an already-weighted scalar, in one of two scopes
(the class attribute ``scope``):

- ``"branch"`` (the default when ``scope`` is absent): ``forward(branch, targets)`` takes one ``BranchOutput`` and
  the identity labels; the criterion applies it to every branch and sums.
- ``"output"``: ``forward(output, targets, batch)`` takes the whole ``ModelOutput`` and the loader's batch dict
  (``None`` when the caller has none) and is called once, for supervision beyond identity labels (HAA's gate).
"""

from __future__ import annotations

from typing import Dict, List, Mapping, Optional, Tuple

import torch
from torch import nn
from yacs.config import CfgNode

from compressreid.errors import ConfigError
from compressreid.modeling.contract import ModelOutput
from compressreid.registry import Registry

LOSSES = Registry("loss")
BRANCH_SCOPE, OUTPUT_SCOPE = "branch", "output"


class ReIDCriterion(nn.Module):
    """Named losses, branch-scoped ones summed over every branch of a ``ModelOutput``; returns each term for logging."""

    def __init__(self, losses: List[Tuple[str, nn.Module]]):
        super().__init__()
        self.names = [name for name, _ in losses]
        self.losses = nn.ModuleList(loss for _, loss in losses)

    def forward(self, output: ModelOutput, targets: torch.Tensor,
                batch: Optional[Mapping[str, object]] = None) -> Dict[str, torch.Tensor]:
        """``batch`` is the loader's batch dict, for losses that need more than identity labels."""
        terms = {}
        for name, loss in zip(self.names, self.losses):
            if getattr(loss, "scope", BRANCH_SCOPE) == OUTPUT_SCOPE:
                terms[name] = loss(output, targets, batch)
                continue
            values = [loss(branch, targets) for branch in output.branches]
            terms[name] = torch.stack(values).sum() if len(values) > 1 else values[0]
        return terms


def build_criterion(cfg: CfgNode) -> ReIDCriterion:
    names = list(cfg.MODEL.LOSSES.NAME)
    if not names:
        raise ConfigError("MODEL.LOSSES.NAME is empty; name at least one loss, e.g. CrossEntropyLoss")
    return ReIDCriterion([(name, LOSSES.get(name).from_config(cfg)) for name in names])
