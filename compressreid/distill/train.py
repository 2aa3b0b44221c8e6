"""Distillation training: a student, its frozen teachers and the losses' adapters, driven by the engine's ``fit``.

``model_final.pth`` holds the student alone (it loads into a plain ``build_model(cfg)``); the adapters and
projections the losses trained are saved apart in ``distill_adapters.pth``; teachers are never saved.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import List, Optional, Sequence

import torch
from torch import nn
from yacs.config import CfgNode

from compressreid.data.build import load_train_data
from compressreid.data.verify import check_test_images
from compressreid.distill.sources import (TeacherSource, check_teacher_files, missing_weights, resolve_teacher_sources,
                                          resolved_config)
from compressreid.distill.task import build_distillation_task
from compressreid.engine.device import resolve_device, seed_everything
from compressreid.engine.distributed import DistContext, prepare_norms
from compressreid.engine.hooks import TRAINING_METRICS
from compressreid.engine.io import atomic_torch_save
from compressreid.engine.launch import training_run
from compressreid.engine.loop import HookBase
from compressreid.engine.optim import build_optimizer
from compressreid.engine.resume import FINAL_MODEL
from compressreid.engine.run_dir import RunDirectory
from compressreid.engine.supervised import train_supervised
from compressreid.engine.trainer import fit, iterations
from compressreid.engine.verdict import Verdict
from compressreid.errors import CheckpointError, ConfigError
from compressreid.evaluation.cross_model import SUMMARY_METRICS
from compressreid.evaluation.run import Evaluation, ReferenceModel, evaluate_run, evaluation_spec
from compressreid.gates import GateRule, GateSpec
from compressreid.modeling import build_model

logger = logging.getLogger(__name__)

# The distillation losses' adapters and projections (DistillationTask.state_dict), next to model_final.pth.
ADAPTERS_FILE = "distill_adapters.pth"


@dataclass
class DistillOutcome:
    """What a distillation run leaves for evaluation: the student (eval mode) and its teachers as references."""

    student: nn.Module
    teachers: List[ReferenceModel]


def teacher_names(count: int) -> List[str]:
    """Names of the teachers in metrics.json and gate rules: ``teacher``, then ``teacher1``, ``teacher2`` ..."""
    return ["teacher"] + [f"teacher{i}" for i in range(1, count)]


def check_distill_inputs(cfg: CfgNode, sources: Optional[Sequence[TeacherSource]] = None) -> List[TeacherSource]:
    """The teacher files a distillation run needs, checked (cheap, before any work).

    Raises:
        ConfigError / CheckpointError: a missing teacher config or checkpoint.
    """
    sources = list(sources) if sources is not None else resolve_teacher_sources(cfg)
    check_teacher_files(sources)
    return sources


def distill_gate_spec(cfg: CfgNode, num_teachers: int) -> GateSpec:
    """What a distillation run reports: the student's evaluation and training numbers (cross-model retrieval when
    gallery-compatible), each teacher as a reference.

    Raises:
        ConfigError: a rule on a cross-model metric in a run that is not gallery-compatible.
    """
    cross = tuple(f"cross_{m}" for m in SUMMARY_METRICS) if cfg.DISTILL.GALLERY_COMPATIBLE else ()
    for text in cfg.TEST.GATES:
        if GateRule.parse(text).metric.startswith("cross_") and not cross:
            raise ConfigError(f"gate rule '{text}' reads a cross-model metric, which only gallery-compatible runs "
                              "report (DISTILL.GALLERY_COMPATIBLE True)")
    return evaluation_spec(cfg, (*TRAINING_METRICS, *cross), teacher_names(num_teachers))


def distill_verdict(cfg: CfgNode, sources: Sequence[TeacherSource]) -> Verdict:
    """The distillation run's gates, validated now (a bad rule fails in seconds, before any training)."""
    return Verdict("distill", cfg, distill_gate_spec(cfg, len(sources)))


def train_distill(cfg: CfgNode, run: RunDirectory, dist: DistContext = DistContext(),
                  device: Optional[torch.device] = None, resume: bool = False, progress: bool = True,
                  extra_hooks: Sequence[HookBase] = (), allow_unsafe: bool = False) -> DistillOutcome:
    """Distil DISTILL.TEACHERS into the configured student on DATASETS.NAMES (see ``fit`` for resume and DDP).

    The optimizer updates the student and the losses' adapters with the same parameter-group rules;
    the teachers stay frozen, outside the checkpoint and outside gradient averaging.

    Args:
        allow_unsafe: teacher checkpoints may need arbitrary unpickling (``--allow-unsafe-checkpoint``).
    """
    sources = check_distill_inputs(cfg)
    seed_everything(cfg.SEED)
    device = device or resolve_device(cfg.MODEL.DEVICE)
    torch.backends.cudnn.benchmark = cfg.CUDNN_BENCHMARK
    with dist.main_first():  # a dataset rendered or checked on first use is written by one rank only
        data = load_train_data(cfg)
        check_test_images(cfg)  # before training, not at the evaluation after it
    student = build_model(cfg, num_classes=data.num_classes, pretrained=True)
    student = prepare_norms(student, (cfg.MODEL.BACKBONE.NORM, cfg.MODEL.HEADS.NORM), dist, device).to(device)
    task = build_distillation_task(resolved_config(cfg, sources), student, data.num_classes, device, allow_unsafe)
    try:
        optimizer = build_optimizer(cfg, task.named_trainable_parameters())
        per_epoch, max_iter = iterations(cfg, data)
        logger.info("distilling %d teacher(s) into %s on %d images / %d identities for %d iterations (%d per epoch) "
                    "on %s x %d; losses %s", len(sources), cfg.MODEL.META_ARCHITECTURE, len(data.records),
                    data.num_classes, max_iter, per_epoch, device, dist.world_size, list(cfg.DISTILL.LOSSES.NAME))
        fit(cfg, run, task, optimizer, data, dist, device, resume, progress, extra_hooks)
        if dist.is_main:
            atomic_torch_save(run.file(ADAPTERS_FILE), task.state_dict())
    finally:
        task.close()  # the teachers are evaluated next: no hook may keep capturing their features
    references = [ReferenceModel(name, teacher.model, source.load_config().INPUT.SIZE_TEST, source.weights)
                  for name, teacher, source in zip(teacher_names(len(sources)), task.teachers, sources)]
    return DistillOutcome(student.eval(), references)


def evaluate_distillation(cfg: CfgNode, run: RunDirectory, outcome: DistillOutcome,
                          progress: bool = True) -> Evaluation:
    """Evaluate the student and its teachers on the same query/gallery (the teachers are the gate references).

    Gallery-compatible runs also search student queries against the teacher's gallery (``cross_model``).
    """
    cross = "teacher" if cfg.DISTILL.GALLERY_COMPATIBLE else ""
    return evaluate_run(cfg, run, model=outcome.student, label="student", progress=progress,
                        reference_models=outcome.teachers, cross_model_with=cross, name="student")


def train_missing_teachers(sources: Sequence[TeacherSource], dist_timeout_s: float = 1800.0,
                           progress: bool = True) -> List[str]:
    """Train every teacher whose checkpoint is missing into its own OUTPUT_DIR, as tools/train_teacher.py would
    (a complete run folder: config, checkpoint, metrics); returns the checkpoints written.

    Raises:
        CheckpointError: a missing checkpoint is not the one its teacher's training writes
            (``<OUTPUT_DIR>/model_final.pth`` of the teacher's config), so training would not provide it.
    """
    written = []
    for source in missing_weights(sources):
        teacher_cfg = source.load_config()
        target = os.path.join(teacher_cfg.OUTPUT_DIR, FINAL_MODEL)
        if os.path.abspath(target) != os.path.abspath(source.weights):
            raise CheckpointError(f"teacher checkpoint not found: {source.weights}, and training {source.config} "
                                  f"would write {target} instead")
        logger.warning("teacher checkpoint %s not found: TRAINING THE TEACHER FIRST (%s into %s); this takes a "
                       "while and happens once", source.weights, source.config, teacher_cfg.OUTPUT_DIR)
        verdict = Verdict("teacher", teacher_cfg, evaluation_spec(teacher_cfg, TRAINING_METRICS))
        with training_run(teacher_cfg, "train_teacher", dist_timeout_s) as job:
            model = train_supervised(teacher_cfg, job.run, job.dist, job.device, progress=progress)
            if job.dist.is_main:
                evaluation = evaluate_run(teacher_cfg, job.run, model=model,
                                          label=teacher_cfg.MODEL.META_ARCHITECTURE, progress=progress)
                verdict(job.run, evaluation.payload, evaluation.judged())
        written.append(source.weights)
    return written
