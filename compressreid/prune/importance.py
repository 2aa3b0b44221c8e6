"""PRUNING_IMPORTANCES: channel-importance criteria by name (PRUNE.IMPORTANCE), each a Torch-Pruning scorer.

A criterion scores every channel of a coupled group (one number per channel of the group's root layer);
scores are normalised per group (divided by their mean) so that global ranking compares groups fairly.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import torch
import torch_pruning as tp
from torch import nn

from compressreid.modeling.layers.norm import IBN
from compressreid.registry import Registry

PRUNING_IMPORTANCES = Registry("pruning importance")


@dataclass(frozen=True)
class ImportanceSpec:
    """A registered criterion: ``build()`` returns a fresh scorer; ``needs_gradients`` asks the caller to
    accumulate loss gradients on the model (a few training batches) before scoring."""

    name: str
    build: Callable[[], tp.importance.Importance]
    needs_gradients: bool = False


def register_importance(name: str, build: Callable[[], tp.importance.Importance],
                        needs_gradients: bool = False) -> ImportanceSpec:
    """Register a criterion under ``name`` (one call per criterion)."""
    spec = ImportanceSpec(name, build, needs_gradients)
    PRUNING_IMPORTANCES.register(name)(spec)
    return spec


def norm_scale(layer: nn.Module) -> Optional[torch.Tensor]:
    """Per-channel affine scale of a norm layer (IBN: InstanceNorm half then BatchNorm half), else None."""
    if isinstance(layer, IBN):
        return torch.cat([layer.IN.weight, layer.BN.weight]) if layer.IN.affine and layer.BN.affine else None
    if isinstance(layer, (nn.modules.batchnorm._BatchNorm, nn.modules.instancenorm._InstanceNorm)) and layer.affine:
        return layer.weight
    return None


class NormScaleImportance(tp.importance.GroupMagnitudeImportance):
    """Network slimming (Liu et al., ICCV 2017): |gamma| of every norm in the group, averaged per channel.

    Unlike Torch-Pruning's BNScaleImportance it also reads IBN-a's and OSNet's instance norms, so groups whose
    only norm is an IBN (the first norm of every ResNet-IBN block) are scored rather than skipped.
    """

    def __init__(self):
        super().__init__(p=1, group_reduction="mean", normalizer="mean")

    @torch.no_grad()
    def __call__(self, group) -> Optional[torch.Tensor]:
        scores, roots = [], []
        for i, (dep, idxs) in enumerate(group):
            scale = norm_scale(dep.layer)
            if scale is None:
                continue
            scores.append(scale.detach().abs()[list(idxs)])
            roots.append(group[i].root_idxs)
        if not scores:
            return None
        return self._normalize(self._reduce(scores, roots), self.normalizer)


register_importance("l1", lambda: tp.importance.GroupMagnitudeImportance(p=1))
register_importance("l2", lambda: tp.importance.GroupMagnitudeImportance(p=2))
register_importance("bn_scale", NormScaleImportance)
register_importance("taylor", tp.importance.GroupTaylorImportance, needs_gradients=True)
