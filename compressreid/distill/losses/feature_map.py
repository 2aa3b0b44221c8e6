"""Feature-map distillation on tapped stages: FitNet hints or Heo et al.'s overhaul (margin ReLU, partial L2).

Each student tap goes through a 1x1 conv + BN adapter to the teacher tap's channels; when the maps differ
in size (other strides or input sizes) the teacher's map is resized to the student's grid.
"""

from __future__ import annotations

import math
from typing import List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn
from yacs.config import CfgNode

from compressreid.distill.registry import (DISTILL_LOSSES, DistillLoss, DistillView, ModelInfo, TapRequest,
                                           resolve_stage)
from compressreid.errors import ConfigError
from compressreid.modeling.contract import FeatureInfo

MODES = ("fitnet", "overhaul")


def build_adapter(in_channels: int, out_channels: int) -> nn.Sequential:
    """1x1 conv + BN, He-initialised (Heo et al.'s connector; FitNet's regressor)."""
    conv = nn.Conv2d(in_channels, out_channels, kernel_size=1, bias=False)
    nn.init.normal_(conv.weight, 0.0, math.sqrt(2.0 / out_channels))
    bn = nn.BatchNorm2d(out_channels)
    nn.init.ones_(bn.weight)
    nn.init.zeros_(bn.bias)
    return nn.Sequential(conv, bn)


def resize_to(target: torch.Tensor, size: Tuple[int, int]) -> torch.Tensor:
    """Bilinear resize of a teacher map to the student's grid (antialiased when shrinking)."""
    if tuple(target.shape[-2:]) == tuple(size):
        return target
    shrink = target.shape[-2] > size[0] or target.shape[-1] > size[1]
    return F.interpolate(target, size=size, mode="bilinear", align_corners=False, antialias=shrink)


def partial_l2(student: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Heo et al. (ICCV 2019) eq. 4: (t - s)^2 except where s <= t <= 0; averaged over all entries."""
    keep = (student > target) | (target > 0)
    return ((student - target).pow(2) * keep).mean()


@DISTILL_LOSSES.register()
class FeatureMapDistill(DistillLoss):
    """Sum over stage pairs of MSE(adapter(s), t) (``fitnet``) or of partial_l2(adapter(s), max(t, m))
    (``overhaul``, m = the teacher's per-channel margin).

    Heo et al. distil the pre-ReLU stage outputs. Our taps are module outputs: for ResNet stages they are
    post-ReLU (non-negative), so max(t, m) with m < 0 leaves them unchanged and only the partial L2 acts.
    Hooking inside the block would not help without a copy: the block's last ReLU is in-place, which is also
    why fast-reid's overhaul distiller, though it asks for "pre-ReLU" features, gets post-ReLU ones for
    stages 1-3. Margins are still applied, so models with real pre-activation taps get the full method.
    """

    config_key = "FEATURE"

    def __init__(self, pairs: Sequence[Tuple[FeatureInfo, FeatureInfo]], mode: str = "fitnet",
                 margins: Optional[Sequence[Optional[torch.Tensor]]] = None, scale: float = 1.0):
        super().__init__()
        if mode not in MODES:
            raise ConfigError(f"DISTILL.LOSSES.FEATURE.MODE '{mode}' must be one of {MODES}")
        if not pairs:
            raise ConfigError("DISTILL.LOSSES.FEATURE.STAGES is empty; name at least one stage index, e.g. [-1]")
        self.mode, self.scale = mode, float(scale)
        self.pairs: List[Tuple[str, str]] = [(s.module, t.module) for s, t in pairs]
        self.adapters = nn.ModuleList(build_adapter(s.channels, t.channels) for s, t in pairs)
        margins = list(margins) if margins is not None else [None] * len(pairs)
        for i, ((_, t), margin) in enumerate(zip(pairs, margins)):
            # without a BatchNorm to read, a zero margin makes max(t, m) a plain ReLU
            margin = torch.zeros(t.channels) if margin is None else margin.detach().float().clone()
            self.register_buffer(f"margin{i}", margin.view(1, -1, 1, 1))
        self.feature_taps = TapRequest(tuple(s for s, _ in self.pairs), tuple(t for _, t in self.pairs))

    @classmethod
    def from_config(cls, node: CfgNode, student: ModelInfo, teacher: ModelInfo) -> "FeatureMapDistill":
        teacher_stages = list(node.TEACHER_STAGES) or list(node.STAGES)
        if len(teacher_stages) != len(node.STAGES):
            raise ConfigError(f"DISTILL.LOSSES.FEATURE.TEACHER_STAGES {teacher_stages} must be empty or as long "
                              f"as STAGES {list(node.STAGES)}")
        pairs = [(resolve_stage(student, s, "DISTILL.LOSSES.FEATURE.STAGES"),
                  resolve_stage(teacher, t, "DISTILL.LOSSES.FEATURE.TEACHER_STAGES"))
                 for s, t in zip(node.STAGES, teacher_stages)]
        margins = [teacher.feature_margins.get(t.module) for _, t in pairs]
        return cls(pairs, node.MODE, margins, node.SCALE)

    def forward(self, student: DistillView, teacher: DistillView) -> torch.Tensor:
        terms = []
        for i, ((s_name, t_name), adapter) in enumerate(zip(self.pairs, self.adapters)):
            s = adapter(student.features[s_name])
            t = resize_to(teacher.features[t_name].detach(), s.shape[-2:])
            if self.mode == "fitnet":
                terms.append(F.mse_loss(s, t))
            else:
                terms.append(partial_l2(s, torch.maximum(t, getattr(self, f"margin{i}"))))
        return self.scale * torch.stack(terms).sum()
