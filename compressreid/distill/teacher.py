"""Frozen teachers: always in eval mode, no gradients, own input size, outside the student's checkpoint and DDP.

Teachers belong to the distillation task, not to the student: a teacher hidden inside the student
(fast-reid's Distiller) ends up in the student's state dict, is wrapped by DDP (which then syncs
buffers and checks for unused parameters it must never touch) and is switched to train mode by
``student.train()``. Keeping it here makes each of those impossible by construction.
"""

from __future__ import annotations

import logging
from typing import List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn
from yacs.config import CfgNode

from compressreid.checkpoint import LoadReport, load_checkpoint
from compressreid.config import load_config
from compressreid.distill.registry import DistillView, ModelInfo, identity_set
from compressreid.distill.taps import FeatureTaps
from compressreid.errors import CheckpointError, ConfigError
from compressreid.modeling import ReIDModel, build_model

logger = logging.getLogger(__name__)


def resize_images(images: torch.Tensor, size: Tuple[int, int]) -> torch.Tensor:
    """Bilinear resize of an RGB 0-255 batch (the model normalises afterwards); antialiased when shrinking."""
    shrink = images.shape[-2] > size[0] or images.shape[-1] > size[1]
    return F.interpolate(images, size=tuple(size), mode="bilinear", align_corners=False, antialias=shrink)


class Teacher(nn.Module):
    """One frozen teacher model with its loss weight, input size and feature taps.

    Args:
        model: any meta-architecture following the ReIDModel contract.
        info: what losses may know about it (embedding dim, taps, classes).
        weight: multiplies every distillation term computed against this teacher.
        input_size: (H, W) the teacher was trained at; batches of another size are resized for it.
        bf16: run under bf16 autocast (pays off on CPUs with AVX512-BF16/AMX and on GPUs); outputs are fp32.
        channels_last: NHWC memory format, faster for convolutions on recent CPUs and GPUs.
    """

    def __init__(self, model: ReIDModel, info: ModelInfo, weight: float = 1.0,
                 input_size: Optional[Sequence[int]] = None, bf16: bool = False, channels_last: bool = False):
        super().__init__()
        self.model = model.requires_grad_(False)
        self.info, self.weight = info, float(weight)
        self.input_size = tuple(input_size) if input_size else None
        self.bf16, self.channels_last = bf16, channels_last
        if channels_last:
            self.model.to(memory_format=torch.channels_last)
        self.taps = FeatureTaps(model)
        self.train(False)

    def train(self, mode: bool = True) -> "Teacher":
        # Always eval: the teacher's BatchNorm statistics and dropout must not follow the student's mode.
        return super().train(False)

    def set_taps(self, paths: Sequence[str]) -> None:
        self.taps.resolve(paths)

    def forward(self, images: torch.Tensor) -> DistillView:
        """The teacher's view of ``images``: embedding, classifier logits and tapped features, all fp32 targets."""
        if self.model.training:  # someone called .train() on the bare model; a teacher never trains
            self.model.eval()
        # no_grad, not inference_mode: these tensors are targets inside autograd-recorded losses, and
        # ops such as mse_loss save their target for backward, which inference tensors refuse.
        self.taps.clear()
        with torch.no_grad():
            if self.input_size and tuple(images.shape[-2:]) != self.input_size:
                images = resize_images(images, self.input_size)
            if self.channels_last:
                images = images.contiguous(memory_format=torch.channels_last)
            with torch.autocast(images.device.type, dtype=torch.bfloat16, enabled=self.bf16):
                output = self.model.forward_train(images)  # eval mode: embedding = the eval embedding
            return DistillView.from_output(output, self.taps.collect())


class TeacherEnsemble(nn.Module):
    """One or several teachers; ``forward`` returns one DistillView per teacher."""

    def __init__(self, teachers: Sequence[Teacher]):
        super().__init__()
        if not teachers:
            raise ConfigError("a distillation task needs at least one teacher")
        self.teachers = nn.ModuleList(teachers)
        self.train(False)

    def train(self, mode: bool = True) -> "TeacherEnsemble":
        return super().train(False)  # see Teacher.train

    @property
    def infos(self) -> List[ModelInfo]:
        return [t.info for t in self.teachers]

    @property
    def weights(self) -> List[float]:
        return [t.weight for t in self.teachers]

    def __len__(self) -> int:
        return len(self.teachers)

    def __iter__(self):
        return iter(self.teachers)

    def forward(self, images: torch.Tensor) -> List[DistillView]:
        return [teacher(images) for teacher in self.teachers]


def _classifier_status(cfg: CfgNode, report: LoadReport, num_classes: int, path: str) -> Tuple[int, str]:
    """(usable classes, note): raises CheckpointError when non-classifier weights are missing."""
    note = ""
    if report.missing:
        # which missing keys belong to the classifier: those a model built without one does not have
        without_classifier = set(build_model(cfg, num_classes=0).state_dict())
        missing = [k for k in report.missing if k in without_classifier]
        if missing:
            raise CheckpointError(f"teacher checkpoint {path} lacks {len(missing)} weight(s) of the teacher model, "
                                  f"first: {', '.join(missing[:3])}")
        note = "its checkpoint has no classifier"
    if report.skipped:
        note = f"its checkpoint classifier '{report.skipped[0]}' is not sized for {num_classes} classes"
    usable = num_classes if num_classes > 0 and not note else 0
    return usable, note


def load_teacher(config_file: str, weights: str, num_classes: int, name: str, weight: float = 1.0,
                 bf16: bool = False, channels_last: bool = False,
                 device: torch.device | str = "cpu", strict: bool = True, allow_unsafe: bool = False) -> Teacher:
    """Build the teacher ``config_file`` describes and load ``weights`` (or its own MODEL.WEIGHTS).

    Args:
        num_classes: the student's training identities; the teacher's classifier is usable for logit
            distillation only when its checkpoint has exactly this many classes.
        strict: weights the teacher model does not have are an error too (the student run's MODEL.LOAD_STRICT):
            they mean the config describes another network than the one trained (e.g. without its non-local
            blocks). Missing non-classifier weights are always an error.
        allow_unsafe: the checkpoint may need arbitrary unpickling (``--allow-unsafe-checkpoint``).

    Raises:
        ConfigError: no weights named. CheckpointError: unreadable or unsafe file, missing non-classifier weights,
            or (strict) unexpected weights.
    """
    cfg = load_config(config_file)
    path = weights or cfg.MODEL.WEIGHTS
    if not path:
        raise ConfigError(f"{name}: no weights; set DISTILL.TEACHERS.WEIGHTS or MODEL.WEIGHTS in {config_file}")
    model = build_model(cfg, num_classes=num_classes)
    report = load_checkpoint(model, path, allow_unsafe=allow_unsafe)  # any compressreid / fast-reid format
    if strict and report.unexpected:
        raise CheckpointError(f"teacher checkpoint {path} has {len(report.unexpected)} weight(s) the teacher model "
                              f"of {config_file} does not, first: {', '.join(report.unexpected[:3])}; check that "
                              "config describes the trained teacher, or set MODEL.LOAD_STRICT False")
    usable, note = _classifier_status(cfg, report, num_classes, path)
    info = ModelInfo.of(model, name, usable, identity_set(cfg), note)
    logger.info("%s: %s from %s, input %s, %d classes usable", name, cfg.MODEL.META_ARCHITECTURE, path,
                list(cfg.INPUT.SIZE_TRAIN), usable)
    # the teacher was trained (and its classifier fitted) at SIZE_TRAIN, so that is what it gets
    return Teacher(model.to(device), info, weight, cfg.INPUT.SIZE_TRAIN, bf16, channels_last)


def build_teachers(cfg: CfgNode, num_classes: int, device: torch.device | str = "cpu",
                   allow_unsafe: bool = False) -> TeacherEnsemble:
    """Every teacher of DISTILL.TEACHERS, weighted by SCALES (empty = an equal share each), loaded as strictly as
    this run's MODEL.LOAD_STRICT asks."""
    t = cfg.DISTILL.TEACHERS
    configs, weights, scales = list(t.CONFIGS), list(t.WEIGHTS), list(t.SCALES)
    if not configs:
        raise ConfigError("DISTILL.TEACHERS.CONFIGS is empty; name at least one teacher config file")
    if weights and len(weights) != len(configs):
        raise ConfigError(f"DISTILL.TEACHERS.WEIGHTS has {len(weights)} entries for {len(configs)} CONFIGS; "
                          "give one checkpoint per teacher or none (each config's MODEL.WEIGHTS)")
    if scales and len(scales) != len(configs):
        raise ConfigError(f"DISTILL.TEACHERS.SCALES has {len(scales)} entries for {len(configs)} CONFIGS")
    weights = weights or [""] * len(configs)
    scales = scales or [1.0 / len(configs)] * len(configs)
    return TeacherEnsemble([
        load_teacher(c, w, num_classes, f"teacher {i} ({c})", s, t.BF16, t.CHANNELS_LAST, device,
                     cfg.MODEL.LOAD_STRICT, allow_unsafe)
        for i, (c, w, s) in enumerate(zip(configs, weights, scales))
    ])
