"""Supervised ReID training (teachers, and students trained alone): the task, and the model/optimizer for ``fit``."""

from __future__ import annotations

import logging
from typing import Dict, Optional, Sequence

import torch
from torch import nn
from yacs.config import CfgNode

from compressreid.data.build import load_train_data
from compressreid.data.verify import check_test_images
from compressreid.engine.device import autocast, resolve_device, seed_everything
from compressreid.engine.distributed import DistContext, prepare_norms
from compressreid.engine.loop import HookBase
from compressreid.engine.optim import build_optimizer
from compressreid.engine.run_dir import RunDirectory
from compressreid.engine.trainer import fit, iterations
from compressreid.modeling import ReIDModel, build_model
from compressreid.modeling.losses import ReIDCriterion, build_criterion

logger = logging.getLogger(__name__)

__all__ = ["SupervisedTask", "iterations", "train_supervised"]


class SupervisedTask:
    """Forward + supervised losses on one batch; the loop does backward and the optimizer step.

    ``amp`` (fp16, CUDA) and ``bf16_cpu`` (bf16, CPU) select the autocast of forward and losses.
    """

    def __init__(self, model: ReIDModel, criterion: ReIDCriterion, device: torch.device, bf16_cpu: bool = False,
                 amp: bool = False):
        self.model, self.criterion, self.device = model, criterion, device
        self.bf16_cpu, self.amp = bf16_cpu, amp

    def training_step(self, batch: Dict[str, object]) -> Dict[str, torch.Tensor]:
        images = batch["images"].to(self.device, non_blocking=True)
        targets = batch["targets"].to(self.device, non_blocking=True)
        with autocast(self.device, self.amp, self.bf16_cpu):
            output = self.model.forward_train(images, targets)
            return self.criterion(output, targets, batch)


def train_supervised(cfg: CfgNode, run: RunDirectory, dist: DistContext = DistContext(),
                     device: Optional[torch.device] = None, resume: bool = False, progress: bool = True,
                     extra_hooks: Sequence[HookBase] = ()) -> nn.Module:
    """Train the configured model on DATASETS.NAMES; returns it in eval mode (see ``fit`` for resume and DDP).

    Derived values (number of classes, iterations) live here, never in the config.
    """
    seed_everything(cfg.SEED)
    device = device or resolve_device(cfg.MODEL.DEVICE)
    torch.backends.cudnn.benchmark = cfg.CUDNN_BENCHMARK
    with dist.main_first():  # a dataset rendered or checked on first use is written by one rank only
        data = load_train_data(cfg)
        check_test_images(cfg)  # before training, not at the evaluation after it
    model = build_model(cfg, num_classes=data.num_classes, pretrained=True)
    model = prepare_norms(model, (cfg.MODEL.BACKBONE.NORM, cfg.MODEL.HEADS.NORM), dist, device).to(device)
    optimizer = build_optimizer(cfg, model)
    per_epoch, max_iter = iterations(cfg, data)
    logger.info("training %s on %d images / %d identities for %d iterations (%d per epoch) on %s x %d",
                cfg.MODEL.META_ARCHITECTURE, len(data.records), data.num_classes, max_iter, per_epoch, device,
                dist.world_size)
    task = SupervisedTask(model, build_criterion(cfg).to(device), device, cfg.SOLVER.BF16_CPU, cfg.SOLVER.AMP.ENABLED)
    fit(cfg, run, task, optimizer, data, dist, device, resume, progress, extra_hooks)
    return model.eval()
