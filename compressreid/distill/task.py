"""DistillationTask: one step = frozen teachers' views + the student's forward + the distillation criterion.

It follows the engine's TrainingTask protocol (``model`` is the student), so TrainLoop and its hooks
drive distillation exactly as they drive supervised training.
"""

from __future__ import annotations

from typing import Dict, Iterator, List, Tuple

import torch
from torch import nn
from yacs.config import CfgNode

from compressreid.distill.criterion import DistillationCriterion, build_distillation_criterion
from compressreid.distill.registry import DistillView, ModelInfo, identity_set
from compressreid.distill.taps import FeatureTaps
from compressreid.distill.teacher import TeacherEnsemble, build_teachers
from compressreid.engine.device import autocast
from compressreid.modeling import ReIDModel


class DistillationTask:
    """Student, teachers, taps and criterion of a distillation run.

    Only ``model`` (the student) is what checkpoints and DDP see; the teachers stay outside both (see
    compressreid.distill.teacher) and the criterion's adapters are saved apart, via ``state_dict``.
    """

    def __init__(self, student: ReIDModel, teachers: TeacherEnsemble, criterion: DistillationCriterion,
                 device: torch.device | str = "cpu", bf16_cpu: bool = False, amp: bool = False):
        self.model, self.teachers, self.criterion = student, teachers, criterion
        self.device, self.bf16_cpu, self.amp = torch.device(device), bf16_cpu, amp
        self.student_taps = FeatureTaps(student)
        self.resolve_taps()

    def resolve_taps(self) -> None:
        """(Re)hook exactly the modules the losses read, e.g. after pruning or fusion replaced modules."""
        self.student_taps.resolve(self.criterion.student_taps())
        for index, teacher in enumerate(self.teachers):
            teacher.set_taps(self.criterion.teacher_taps(index))

    def train(self, mode: bool = True) -> "DistillationTask":
        """Student and adapters follow ``mode``; the teachers stay in eval mode whatever it is."""
        self.model.train(mode)
        self.criterion.train(mode)
        self.teachers.train(mode)
        return self

    def training_step(self, batch: Dict[str, object]) -> Dict[str, torch.Tensor]:
        images = batch["images"].to(self.device, non_blocking=True)
        targets = batch["targets"].to(self.device, non_blocking=True)
        self.criterion.train(self.model.training)  # TrainLoop switches only task.model; adapters' BN follows it
        teacher_views = self.teachers(images)
        self.student_taps.clear()
        with autocast(self.device, self.amp, self.bf16_cpu):  # fp16 on CUDA (AMP), bf16 on CPU, as configured
            output = self.model.forward_train(images, targets)
            student_view = DistillView.from_output(output, self.student_taps.collect())
            return self.criterion(output, student_view, teacher_views, targets, batch)

    def named_trainable_parameters(self) -> Iterator[Tuple[str, nn.Parameter]]:
        """Student parameters under their own names, then the losses' adapters/projections under ``distill.``."""
        for name, param in self.model.named_parameters():
            if param.requires_grad:
                yield name, param
        for name, param in self.criterion.named_parameters():
            if param.requires_grad:
                yield f"distill.{name}", param

    def trainable_parameters(self) -> List[nn.Parameter]:
        """What the optimizer must update: the student and the distillation adapters, never a teacher."""
        return [param for _, param in self.named_trainable_parameters()]

    def state_dict(self) -> Dict[str, object]:
        """Adapters and projections (to resume); the student is saved by the checkpointer, teachers never."""
        return {"criterion": self.criterion.state_dict()}

    def load_state_dict(self, state: Dict[str, object]) -> None:
        self.criterion.load_state_dict(state["criterion"])

    def close(self) -> None:
        """Remove every hook this task installed."""
        self.student_taps.remove()
        for teacher in self.teachers:
            teacher.taps.remove()


def build_distillation_task(cfg: CfgNode, student: ReIDModel, num_classes: int,
                            device: torch.device | str = "cpu", allow_unsafe: bool = False) -> DistillationTask:
    """Teachers, criterion and taps from DISTILL for ``student`` (already on ``device``).

    Args:
        num_classes: the training identities the student was built with (0 = no classifier); the derived
            value of the run, passed in rather than read back from the config.
        allow_unsafe: the teachers' checkpoints may need arbitrary unpickling (``--allow-unsafe-checkpoint``).
    """
    teachers = build_teachers(cfg, num_classes, device, allow_unsafe)
    student_info = ModelInfo.of(student, "student", num_classes, identity_set(cfg))
    criterion = build_distillation_criterion(cfg, student_info, teachers.infos, teachers.weights).to(device)
    return DistillationTask(student, teachers, criterion, device, cfg.SOLVER.BF16_CPU, cfg.SOLVER.AMP.ENABLED)
