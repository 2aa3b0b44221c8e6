"""``fit``: drive any training task (supervised, distillation) with the standard hooks, resume, DDP and AMP."""

from __future__ import annotations

import logging
import os
from typing import Dict, List, Optional, Sequence, Tuple

import torch
from yacs.config import CfgNode

from compressreid.checkpoint import save_checkpoint
from compressreid.data.build import TrainData, build_train_loader, load_test_sets
from compressreid.engine.distributed import DistContext
from compressreid.engine.eval_hook import EvalHook
from compressreid.engine.hooks import (CheckpointHook, FreezeLayersHook, LRScheduleHook, ProgressHook,
                                       TensorboardHook, ThroughputHook, TrainLogHook)
from compressreid.engine.loop import HookBase, TrainingTask, TrainLoop
from compressreid.engine.optim import build_grad_clip, lr_factor
from compressreid.engine.resume import (FINAL_MODEL, LAST_CHECKPOINT, read_training_state, restore_training_state,
                                        resume_iteration, save_training_state)
from compressreid.engine.run_dir import RunDirectory
from compressreid.errors import CompressReIDError

logger = logging.getLogger(__name__)

# One JSON line per iteration (losses, LR) in OUTPUT_DIR.
TRAIN_LOG = "train_log.jsonl"


def iterations(cfg: CfgNode, data: TrainData) -> Tuple[int, int]:
    """(iters_per_epoch, max_iter) as fast-reid computes them, unless SOLVER.ITERS_PER_EPOCH is set."""
    per_epoch = cfg.SOLVER.ITERS_PER_EPOCH or max(1, len(data.records) // cfg.SOLVER.IMS_PER_BATCH)
    return per_epoch, per_epoch * cfg.SOLVER.MAX_EPOCH


def training_hooks(cfg: CfgNode, run: RunDirectory, dist: DistContext, device: torch.device, per_epoch: int,
                   progress: bool, extra: Sequence[HookBase] = ()) -> List[HookBase]:
    """The standard hooks in their required order (see engine.loop); rank 0 alone reports and saves."""
    hooks: List[HookBase] = [
        LRScheduleHook(lambda it: lr_factor(cfg, it, per_epoch)),
        FreezeLayersHook(cfg.MODEL.FREEZE_LAYERS, cfg.SOLVER.FREEZE_ITERS),
        ProgressHook(enabled=progress and dist.is_main),
        ThroughputHook(cfg.SOLVER.IMS_PER_BATCH),
        *extra,
    ]
    if cfg.TEST.EVAL_PERIOD:
        test_sets = load_test_sets(cfg) if dist.is_main else []
        hooks.append(EvalHook(cfg, test_sets, cfg.TEST.EVAL_PERIOD * per_epoch, device, dist.is_main))
    if dist.is_main:
        hooks.append(TrainLogHook(run.file(TRAIN_LOG)))
        hooks.append(TensorboardHook(run.file("tensorboard")))
        hooks.append(CheckpointHook(run.file(LAST_CHECKPOINT), cfg.SOLVER.CHECKPOINT_PERIOD * per_epoch, cfg))
    return hooks


def fit(cfg: CfgNode, run: RunDirectory, task: TrainingTask, optimizer: torch.optim.Optimizer, data: TrainData,
        dist: DistContext = DistContext(), device: torch.device = torch.device("cpu"), resume: bool = False,
        progress: bool = True, extra_hooks: Sequence[HookBase] = ()) -> TrainLoop:
    """Train ``task`` (model, optimizer and any task state already built) for SOLVER.MAX_EPOCH epochs.

    With ``resume`` the run continues from OUTPUT_DIR's last checkpoint to the same result as an uninterrupted
    run. Rank 0 writes ``last_checkpoint.pth`` (full state, also at the end, so a run killed during its final
    evaluation resumes straight to it), ``model_final.pth`` and records the throughput in ``run``.

    Raises:
        CheckpointError / ConfigError: nothing to resume from, or a checkpoint trained with another config.
    """
    per_epoch, max_iter = iterations(cfg, data)
    state = _shared_training_state(run, cfg, dist) if resume else None
    if not resume and dist.is_main and os.path.exists(run.file(LAST_CHECKPOINT)):
        os.remove(run.file(LAST_CHECKPOINT))  # a fresh run must never be resumed from an older run's state
    start = resume_iteration(state)
    amp = cfg.SOLVER.AMP.ENABLED and device.type == "cuda"
    if cfg.SOLVER.AMP.ENABLED and not amp:
        logger.warning("SOLVER.AMP.ENABLED applies to CUDA only; on CPU use SOLVER.BF16_CPU")
    loop = TrainLoop(task, optimizer, build_train_loader(cfg, data, start, dist.rank, dist.world_size), max_iter,
                     training_hooks(cfg, run, dist, device, per_epoch, progress, extra_hooks), start,
                     build_grad_clip(cfg), torch.amp.GradScaler("cuda", enabled=amp), dist)
    if state is not None:
        restore_training_state(loop, state)
        logger.info("resumed from %s at iteration %d of %d", state["path"], start, max_iter)
    else:
        _broadcast_parameters(task, optimizer, dist)
    loop.run()
    if dist.is_main:
        save_training_state(run.file(LAST_CHECKPOINT), loop, cfg)
        save_checkpoint(run.file(FINAL_MODEL), task.model, iteration=loop.iter)
        run.record(loop.summary)
    dist.barrier()
    return loop


def _shared_training_state(run: RunDirectory, cfg: CfgNode, dist: DistContext) -> Optional[Dict[str, object]]:
    # rank 0 reads (OUTPUT_DIR need not be shared between machines) and every rank gets the state, or the error
    payload: object = None
    if dist.is_main:
        try:
            payload = read_training_state(run.path, cfg)
        except CompressReIDError as exc:
            payload = exc
    payload = dist.broadcast_object(payload)
    if isinstance(payload, BaseException):
        raise payload
    return payload


def _broadcast_parameters(task: TrainingTask, optimizer: torch.optim.Optimizer, dist: DistContext) -> None:
    # ranks start from rank 0's weights even if initialisation drew differently somewhere
    if not dist.enabled:
        return
    tensors = list(task.model.state_dict().values())
    tensors += [p.data for group in optimizer.param_groups for p in group["params"]]
    for tensor in tensors:
        torch.distributed.broadcast(tensor, src=0)
