"""Knowledge distillation: registered losses, the weighted criterion, feature taps, frozen teachers, the task."""

from compressreid.distill.registry import (DISTILL_LOSSES, DistillLoss, DistillView, ModelInfo, TapRequest,
                                           build_distill_loss)
from compressreid.distill import losses  # noqa: F401  (registers every loss)
from compressreid.distill.criterion import DistillationCriterion, build_distillation_criterion
from compressreid.distill.taps import FeatureTaps
from compressreid.distill.teacher import Teacher, TeacherEnsemble, build_teachers, load_teacher
from compressreid.distill.task import DistillationTask, build_distillation_task

__all__ = ["DISTILL_LOSSES", "DistillLoss", "DistillView", "ModelInfo", "TapRequest", "build_distill_loss",
           "DistillationCriterion", "build_distillation_criterion", "FeatureTaps", "Teacher", "TeacherEnsemble",
           "build_teachers", "load_teacher", "DistillationTask", "build_distillation_task"]
