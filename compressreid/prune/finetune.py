"""Distillation fine-tuning between pruning steps, and the loss gradients Taylor importance reads.

The teacher is the unpruned source model held in memory ("unpruned") or the source run's own distillation
teachers ("teacher"); the losses, optimizer and schedule are this config's DISTILL and SOLVER sections.
"""

from __future__ import annotations

import os
from typing import Optional

import torch
from torch import nn
from yacs.config import CfgNode

from compressreid.checkpoint import read_checkpoint
from compressreid.checkpoint_formats import CLASSIFIER_KEYS
from compressreid.data.build import TrainData, build_train_loader, close_batches
from compressreid.distill.criterion import build_distillation_criterion
from compressreid.distill.registry import ModelInfo, identity_set
from compressreid.distill.sources import resolve_teacher_sources, resolved_config
from compressreid.distill.task import DistillationTask, build_distillation_task
from compressreid.distill.teacher import Teacher, TeacherEnsemble
from compressreid.engine.distributed import DistContext
from compressreid.engine.optim import build_optimizer
from compressreid.engine.resume import FINAL_MODEL, LAST_CHECKPOINT
from compressreid.engine.run_dir import RunDirectory
from compressreid.engine.source_run import SourceRun
from compressreid.engine.trainer import fit

TEACHERS = ("unpruned", "teacher")
# Training batches whose loss gradients Taylor importance averages (a few suffice to rank channels).
TAYLOR_BATCHES = 4


def finetune_config(cfg: CfgNode, source: SourceRun, step: int) -> CfgNode:
    """A derived copy of ``cfg`` for one fine-tuning step (never dumped): FINETUNE_ITERS iterations as one
    epoch, no periodic evaluation, a per-step seed, and the teachers PRUNE.TEACHER names."""
    derived = cfg.clone()
    derived.defrost()
    derived.SOLVER.ITERS_PER_EPOCH = max(1, cfg.PRUNE.FINETUNE_ITERS)
    derived.SOLVER.MAX_EPOCH = 1
    derived.SOLVER.DELAY_EPOCHS = 0
    derived.TEST.EVAL_PERIOD = 0
    derived.SEED = cfg.SEED + step  # each step samples other batches
    if cfg.PRUNE.TEACHER == "teacher":
        derived.DISTILL.TEACHERS = source.config.DISTILL.TEACHERS.clone()
        derived = resolved_config(derived, resolve_teacher_sources(derived))
    derived.freeze()
    return derived


def classifier_classes(source: SourceRun, num_classes: int, cfg: CfgNode) -> int:
    """``num_classes`` when the source checkpoint's classifier covers this run's identities, else 0."""
    if identity_set(source.config) != identity_set(cfg):
        return 0
    state = read_checkpoint(source.weights, source.allow_unsafe).get("model", {})
    shapes = [tuple(state[k].shape) for k in CLASSIFIER_KEYS if k in state]
    return num_classes if any(shape[0] == num_classes for shape in shapes) else 0


def build_finetune_task(cfg: CfgNode, student: nn.Module, unpruned: nn.Module, source: SourceRun,
                        num_classes: int, device: torch.device) -> DistillationTask:
    """The distillation task of one step for the (just pruned) student; built anew each step because the
    student's channels, taps and adapters changed."""
    if cfg.PRUNE.TEACHER == "teacher":
        return build_distillation_task(cfg, student, num_classes, device, source.allow_unsafe)
    t = cfg.DISTILL.TEACHERS
    usable = classifier_classes(source, num_classes, cfg)
    info = ModelInfo.of(unpruned, "unpruned", usable, identity_set(source.config),
                        "" if usable else "the source checkpoint has no classifier for these identities")
    # The unpruned model is held in memory rather than re-read: a source that is itself pruned could not be
    # loaded by the file-based teacher loader, and Teacher keeps it frozen and in eval mode either way.
    teachers = TeacherEnsemble([Teacher(unpruned, info, 1.0, source.config.INPUT.SIZE_TRAIN, t.BF16,
                                        t.CHANNELS_LAST)])
    student_info = ModelInfo.of(student, "student", num_classes, identity_set(cfg))
    criterion = build_distillation_criterion(cfg, student_info, teachers.infos, teachers.weights).to(device)
    return DistillationTask(student, teachers, criterion, device, cfg.SOLVER.BF16_CPU, cfg.SOLVER.AMP.ENABLED)


def accumulate_gradients(task: DistillationTask, cfg: CfgNode, data: TrainData, dist: DistContext,
                         batches: int = TAYLOR_BATCHES) -> None:
    """Sum the fine-tuning loss gradients of ``batches`` training batches into the student's ``.grad``
    (averaged over ranks, so every rank ranks channels the same way)."""
    task.model.zero_grad(set_to_none=True)
    task.train(True)
    loader = iter(build_train_loader(cfg, data, 0, dist.rank, dist.world_size))
    try:
        for _ in range(batches):
            losses = task.training_step(next(loader))
            torch.stack([value.float() for value in losses.values()]).sum().backward()
    finally:
        close_batches(loader)  # its workers stop here, not in whichever process collects it
    if dist.enabled:
        for param in task.model.parameters():
            if param.grad is not None:
                torch.distributed.all_reduce(param.grad)
                param.grad /= dist.world_size
    task.train(False)


def finetune(cfg: CfgNode, run: RunDirectory, task: DistillationTask, data: TrainData, dist: DistContext,
             device: torch.device, step: int, progress: bool) -> Optional[dict]:
    """FINETUNE_ITERS of distillation in ``run``/finetune_step<k> (train log, tensorboard); the step's
    checkpoints are removed afterwards: without the pruning history they could not be loaded anyway."""
    if cfg.PRUNE.FINETUNE_ITERS <= 0:
        return None
    step_run = RunDirectory(run.file(f"finetune_step{step}"))
    os.makedirs(step_run.path, exist_ok=True)
    optimizer = build_optimizer(cfg, task.named_trainable_parameters())
    loop = fit(cfg, step_run, task, optimizer, data, dist, device, False, progress)
    if dist.is_main:
        for name in (FINAL_MODEL, LAST_CHECKPOINT):
            if os.path.exists(step_run.file(name)):
                os.remove(step_run.file(name))
    return loop.summary
