"""Supervised ReID training (teachers, and students trained alone): task + loop + hooks from the config."""

from __future__ import annotations

import logging
from typing import Dict

import torch
from torch import nn
from yacs.config import CfgNode

from compressreid.data.build import TrainData, build_train_loader, load_train_data
from compressreid.engine.device import resolve_device, seed_everything
from compressreid.engine.hooks import (CheckpointHook, FreezeLayersHook, LRScheduleHook, ProgressHook,
                                       TensorboardHook)
from compressreid.engine.loop import TrainLoop
from compressreid.engine.optim import build_optimizer, lr_factor
from compressreid.engine.run_dir import RunDirectory
from compressreid.modeling import ReIDModel, build_model
from compressreid.modeling.losses import ReIDCriterion, build_criterion

logger = logging.getLogger(__name__)


class SupervisedTask:
    """Forward + supervised losses on one batch; the loop does backward and the optimizer step."""

    def __init__(self, model: ReIDModel, criterion: ReIDCriterion, device: torch.device, bf16_cpu: bool = False):
        self.model, self.criterion, self.device, self.bf16_cpu = model, criterion, device, bf16_cpu

    def training_step(self, batch: Dict[str, object]) -> Dict[str, torch.Tensor]:
        images = batch["images"].to(self.device, non_blocking=True)
        targets = batch["targets"].to(self.device, non_blocking=True)
        use_bf16 = self.bf16_cpu and self.device.type == "cpu"
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=use_bf16):
            output = self.model.forward_train(images, targets)
        return self.criterion(output, targets, batch)


def iterations(cfg: CfgNode, data: TrainData) -> tuple:
    """(iters_per_epoch, max_iter) as fast-reid computes them, unless SOLVER.ITERS_PER_EPOCH is set."""
    per_epoch = cfg.SOLVER.ITERS_PER_EPOCH or max(1, len(data.records) // cfg.SOLVER.IMS_PER_BATCH)
    return per_epoch, per_epoch * cfg.SOLVER.MAX_EPOCH


def train_supervised(cfg: CfgNode, run: RunDirectory, progress: bool = True) -> nn.Module:
    """Train the configured model on DATASETS.NAMES; returns it in eval mode.

    Derived values (number of classes, iterations) live here, never in the config.
    """
    seed_everything(cfg.SEED)
    device = resolve_device(cfg.MODEL.DEVICE)
    data = load_train_data(cfg)
    model = build_model(cfg, num_classes=data.num_classes).to(device)
    optimizer = build_optimizer(cfg, model)
    per_epoch, max_iter = iterations(cfg, data)
    logger.info("training %s on %d images / %d identities for %d iterations (%d per epoch) on %s",
                cfg.MODEL.META_ARCHITECTURE, len(data.records), data.num_classes, max_iter, per_epoch, device)
    hooks = [
        LRScheduleHook(lambda it: lr_factor(cfg, it, per_epoch)),
        FreezeLayersHook(cfg.MODEL.FREEZE_LAYERS, cfg.SOLVER.FREEZE_ITERS),
        ProgressHook(enabled=progress),
        TensorboardHook(run.file("tensorboard")),
        CheckpointHook(run.path, cfg.SOLVER.CHECKPOINT_PERIOD * per_epoch),
    ]
    loader = build_train_loader(cfg, data)
    loop = TrainLoop(SupervisedTask(model, build_criterion(cfg).to(device), device, cfg.SOLVER.BF16_CPU),
                     optimizer, loader, max_iter, hooks)
    loop.run()
    hooks[-1].save("model_final.pth")
    return model.eval()
