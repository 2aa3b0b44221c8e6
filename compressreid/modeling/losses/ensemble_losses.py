"""Supervision of HAA's adaptive ensemble: classify black clothes from the gate's logits, ignoring unknown flags."""

from __future__ import annotations

from typing import Mapping, Optional

import torch
import torch.nn.functional as F
from torch import nn

from compressreid.data.image_dataset import BLACK_CLOTHES_KEY
from compressreid.errors import ConfigError
from compressreid.modeling.contract import ModelOutput
from compressreid.modeling.losses.registry import LOSSES, OUTPUT_SCOPE

# ModelOutput.aux key of the ensemble gate's logits [B, 2]: column 0 = not black, column 1 = black.
BLACK_LOGITS = "black_logits"
# ModelOutput.aux key of the ensemble weights [B, 2]: column 0 = global branch, column 1 = head-shoulder branch.
ENSEMBLE_WEIGHTS = "ensemble_weights"


@LOSSES.register()
class EnsembleGateLoss(nn.Module):
    """Cross-entropy between the gate's black-clothes logits and the batch's flags (1 black, 0 not, -1 unknown).

    Unknown flags (-1: datasets without the annotation) are ignored; a batch with no known flag gives a zero that
    keeps the graph connected. Acts on the whole ModelOutput (``scope = "output"``), once per batch.
    """

    scope = OUTPUT_SCOPE

    def __init__(self, scale: float = 1.0):
        super().__init__()
        self.scale = scale

    @classmethod
    def from_config(cls, cfg) -> "EnsembleGateLoss":
        return cls(cfg.MODEL.HAA.GATE_LOSS_SCALE)

    def forward(self, output: ModelOutput, targets: torch.Tensor,
                batch: Optional[Mapping[str, object]] = None) -> torch.Tensor:
        logits = output.aux.get(BLACK_LOGITS)
        if logits is None:
            raise ConfigError(f"EnsembleGateLoss needs a model that returns aux['{BLACK_LOGITS}'] (e.g. HAA)")
        if batch is None or BLACK_CLOTHES_KEY not in batch:
            raise ConfigError(f"EnsembleGateLoss needs the batch's '{BLACK_CLOTHES_KEY}' flags "
                              "(compressreid ImageDataset items carry them)")
        flags = torch.as_tensor(batch[BLACK_CLOTHES_KEY], device=logits.device).long().view(-1)
        if flags.numel() != logits.shape[0]:
            raise ConfigError(f"EnsembleGateLoss: {flags.numel()} black-clothes flags for {logits.shape[0]} images")
        known = flags >= 0
        if not bool(known.any()):
            return logits.sum() * 0.0  # nothing to supervise in this batch
        return self.scale * F.cross_entropy(logits[known].float(), flags[known])
