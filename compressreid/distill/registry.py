"""DISTILL_LOSSES registry and the contract every distillation loss follows.

A loss is an ``nn.Module`` built by ``cls.from_config(node, student_info, teacher_info)`` (``node`` =
its own ``DISTILL.LOSSES.<config_key>`` section) and called as ``loss(student, teacher) -> scalar``,
already weighted. It declares the feature taps it reads (``feature_taps``) so the task hooks only those.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import torch
from torch import nn
from yacs.config import CfgNode

from compressreid.errors import ConfigError
from compressreid.modeling.contract import FeatureInfo, ModelOutput
from compressreid.registry import Registry

DISTILL_LOSSES = Registry("distillation loss")


@dataclass
class DistillView:
    """What a loss sees of one model on one batch.

    Attributes:
        embedding: eval-style embedding [B, D] (``ModelOutput.embedding``).
        logits: per-branch ``cls_logits`` (scaled, without margin); None when the model has no classifier.
        features: tapped intermediate tensors, keyed by module path.
    """

    embedding: torch.Tensor
    logits: Optional[List[torch.Tensor]] = None
    features: Dict[str, torch.Tensor] = field(default_factory=dict)

    @classmethod
    def from_output(cls, output: ModelOutput, features: Dict[str, torch.Tensor]) -> "DistillView":
        """Float32 view of a ``ModelOutput`` (bf16 autocast outputs are upcast; autograd is kept)."""
        logits = [b.cls_logits.float() for b in output.branches if b.cls_logits is not None]
        if len(logits) != len(output.branches):
            logits = []
        return cls(output.embedding.float(), logits or None, {k: v.float() for k, v in features.items()})


@dataclass(frozen=True)
class TapRequest:
    """Module paths a loss reads: in the student and in the teacher."""

    student: Tuple[str, ...] = ()
    teacher: Tuple[str, ...] = ()


@dataclass(frozen=True)
class ModelInfo:
    """What a loss may know about a model when it is built (never the model itself).

    Attributes:
        name: for messages ("student", "teacher 0 (configs/x.yml)").
        embedding_dim: D of ``ModelOutput.embedding``.
        feature_info: the model's declared taps.
        num_classes: classes of its usable classifier (0 = none or not matching the training data).
        identity_set: what the classifier's classes are (training datasets, COMBINEALL); None = unknown.
        classes_note: why ``num_classes`` is 0, for error messages.
        feature_margins: per tap, Heo et al.'s per-channel margin from the BatchNorm feeding it.
    """

    name: str
    embedding_dim: int
    feature_info: Tuple[FeatureInfo, ...]
    num_classes: int = 0
    identity_set: Optional[Tuple] = None
    classes_note: str = ""
    feature_margins: Dict[str, torch.Tensor] = field(default_factory=dict, compare=False)

    @classmethod
    def of(cls, model: nn.Module, name: str, num_classes: int, identity_set: Optional[Tuple] = None,
           classes_note: str = "") -> "ModelInfo":
        infos = tuple(model.feature_info)
        return cls(name, int(model.embedding_dim), infos, num_classes, identity_set, classes_note,
                   feature_margins(model, infos))


def identity_set(cfg: CfgNode) -> Tuple:
    """The identity set a model trained with ``cfg`` classifies (labels are derived from exactly these)."""
    return tuple(cfg.DATASETS.NAMES), bool(cfg.DATASETS.COMBINEALL)


def gaussian_negative_mean(mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """E[x | x < 0] for x ~ N(mean, std^2): the margin of Heo et al. (ICCV 2019), eq. 2.

    Where almost no mass is negative (Phi(-mean/std) <= 1e-3), Heo et al. use -3 std instead.
    """
    std = std.abs().clamp_min(1e-12)
    a = -mean / std
    cdf = 0.5 * (1 + torch.erf(a / math.sqrt(2)))
    pdf = torch.exp(-0.5 * a * a) / math.sqrt(2 * math.pi)
    margin = mean - std * pdf / cdf.clamp_min(1e-12)
    return torch.where(cdf > 1e-3, margin, -3 * std)


def feature_margins(model: nn.Module, infos: Sequence[FeatureInfo]) -> Dict[str, torch.Tensor]:
    """Per tap, the margin computed from the affine parameters of the last BatchNorm inside the tapped
    module (the BN that produces the tap's pre-activation), when it has as many channels as the tap."""
    margins = {}
    for info in infos:
        try:
            module = model.get_submodule(info.module)
        except AttributeError:
            continue
        norms = [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.affine]
        if norms and norms[-1].num_features == info.channels:
            bn = norms[-1]
            margins[info.module] = gaussian_negative_mean(bn.bias.detach().float(), bn.weight.detach().float())
    return margins


def resolve_stage(info: ModelInfo, index: int, key: str) -> FeatureInfo:
    """The tap at ``index`` (negative counts from the last) of ``info``'s model."""
    taps = info.feature_info
    if not -len(taps) <= index < len(taps):
        raise ConfigError(f"{key}: stage index {index} is out of range for the {info.name}, "
                          f"which declares {len(taps)} feature taps ({', '.join(t.module for t in taps)})")
    return taps[index]


class DistillLoss(nn.Module):
    """Base of registered distillation losses.

    Class attributes:
        config_key: the loss's section, ``DISTILL.LOSSES.<config_key>``.
        needs_shared_classes: compares classifier outputs, so student and teacher must classify the
            same identities (checked by ``build_distill_loss``).
    """

    config_key: str = ""
    needs_shared_classes: bool = False
    feature_taps: TapRequest = TapRequest()

    @classmethod
    def from_config(cls, node: CfgNode, student: ModelInfo, teacher: ModelInfo) -> "DistillLoss":
        raise NotImplementedError  # pragma: no cover - abstract

    def forward(self, student: DistillView, teacher: DistillView) -> torch.Tensor:
        raise NotImplementedError  # pragma: no cover - abstract


def check_shared_classes(loss_name: str, student: ModelInfo, teacher: ModelInfo) -> None:
    """Raise ConfigError unless student and teacher classifiers cover the same identity set.

    Relation, embedding and feature losses never call this: they work across identity sets.
    """
    hint = "; use embedding, relation or feature losses instead, which need no shared classes"
    if student.num_classes <= 0:
        raise ConfigError(f"{loss_name} compares classifier outputs but the student has no classifier "
                          f"(built with 0 classes){hint}")
    if student.identity_set is not None and teacher.identity_set is not None \
            and student.identity_set != teacher.identity_set:
        raise ConfigError(f"{loss_name}: {teacher.name} was trained on identities {teacher.identity_set}, the "
                          f"student on {student.identity_set}; logit distillation needs the same identity set{hint}")
    if teacher.num_classes != student.num_classes:
        note = f" ({teacher.classes_note})" if teacher.classes_note else ""
        raise ConfigError(f"{loss_name}: {teacher.name} classifies {teacher.num_classes} identities{note}, "
                          f"the student {student.num_classes}; logit distillation needs the same identity set{hint}")


def build_distill_loss(name: str, losses_node: CfgNode, student: ModelInfo, teacher: ModelInfo) -> DistillLoss:
    """Build the registered loss ``name`` from its own section of ``DISTILL.LOSSES``."""
    cls = DISTILL_LOSSES.get(name)
    if cls.needs_shared_classes:
        check_shared_classes(name, student, teacher)
    return cls.from_config(losses_node[cls.config_key], student, teacher)
