"""Supervised ReID losses, registered by fast-reid's names and weighted from the config."""

from compressreid.modeling.losses.registry import LOSSES, ReIDCriterion, build_criterion
from compressreid.modeling.losses import metric_losses, softmax_losses  # noqa: F401  (registers)

__all__ = ["LOSSES", "ReIDCriterion", "build_criterion"]
