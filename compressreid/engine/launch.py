"""The frame of a training tool's run: join the (possibly multi-process) job, open OUTPUT_DIR on rank 0, clean up."""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from typing import Iterator

import torch
from yacs.config import CfgNode

from compressreid.engine.distributed import DistContext, init_distributed, shutdown_distributed
from compressreid.engine.resume import check_resumable
from compressreid.engine.run_dir import RunDirectory
from compressreid.errors import CompressReIDError


@dataclass
class TrainingRun:
    """What a training tool works with: the run folder, this process's rank, and its device."""

    run: RunDirectory
    dist: DistContext
    device: torch.device


@contextlib.contextmanager
def training_run(cfg: CfgNode, tool: str, dist_timeout_s: float = 1800.0,
                 resume: bool = False) -> Iterator[TrainingRun]:
    """Join the job torchrun describes (a plain run is one process) and open OUTPUT_DIR.

    Only rank 0 writes the folder (config.yaml, status.json: 'failed' if the body raises) and logs at INFO;
    the other ranks log warnings only. With ``resume``, a run that may not resume is refused before the folder
    is touched. The process group is left on exit, error or not.

    Raises:
        CheckpointError / ConfigError: ``resume`` without a checkpoint, or with a changed config.
    """
    dist, device = init_distributed(cfg.MODEL.DEVICE, dist_timeout_s)
    if not dist.is_main:
        logging.getLogger().setLevel(logging.WARNING)
    run = RunDirectory(cfg.OUTPUT_DIR)
    try:
        if resume:
            _check_resumable_on_every_rank(run, cfg, dist)
        if dist.is_main:
            run.start(cfg, tool, resume=resume)
            with run.guard():
                yield TrainingRun(run, dist, device)
        else:
            yield TrainingRun(run, dist, device)
    finally:
        shutdown_distributed()


def _check_resumable_on_every_rank(run: RunDirectory, cfg: CfgNode, dist: DistContext) -> None:
    error = None
    if dist.is_main:
        try:
            check_resumable(run.path, cfg)
        except CompressReIDError as exc:
            error = exc
    error = dist.broadcast_object(error)  # every rank fails with the same message instead of waiting for rank 0
    if error is not None:
        raise error
