"""Data-parallel training across processes started by torchrun: process group, gradient averaging, rank 0 duties.

Gradients are averaged over *every parameter the optimizer updates* after backward, rather than by wrapping
the model in DistributedDataParallel: a task's trainable parameters are not always one module (distillation
adapters live beside the student), and the task calls ``model.forward_train``, which DDP would not see.
"""

from __future__ import annotations

import contextlib
import datetime
import logging
import os
from dataclasses import dataclass
from typing import Dict, Iterable, Iterator, List, Mapping, Optional

import torch
import torch.distributed as dist
from torch import nn
from torch._utils import _flatten_dense_tensors, _unflatten_dense_tensors

from compressreid.engine.device import resolve_device
from compressreid.errors import ConfigError

logger = logging.getLogger(__name__)

# Gradients are all-reduced in flat buckets of about this size: few collectives, bounded extra memory.
_BUCKET_BYTES = 32 * 2**20


@dataclass(frozen=True)
class DistContext:
    """This process's place in the job: rank, world size and local rank (one process when world_size is 1)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        """Rank 0 writes checkpoints, logs, tensorboard and evaluates."""
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    @contextlib.contextmanager
    def main_first(self) -> Iterator[None]:
        """Rank 0 runs the body first (e.g. rendering or unpacking a dataset), then the others, which find it done."""
        if not self.is_main:
            self.barrier()
        yield
        if self.is_main:
            self.barrier()

    def broadcast_object(self, obj: object) -> object:
        """Rank 0's ``obj`` on every rank (identity in a single process)."""
        if not self.enabled:
            return obj
        holder = [obj if self.is_main else None]
        dist.broadcast_object_list(holder, src=0)
        return holder[0]

    def mean_scalars(self, scalars: Mapping[str, float], device: torch.device) -> Dict[str, float]:
        """Average named scalars over ranks (the logged loss is then the global batch's, as in one process)."""
        if not self.enabled or not scalars:
            return dict(scalars)
        values = torch.tensor(list(scalars.values()), dtype=torch.float64, device=device)
        dist.all_reduce(values)
        return dict(zip(scalars, (values / self.world_size).tolist()))

    def average_gradients(self, params: Iterable[nn.Parameter]) -> None:
        """Replace every gradient by its mean over ranks; parameters without a gradient are skipped on all ranks."""
        if not self.enabled:
            return
        for bucket in _buckets([p.grad for p in params if p.grad is not None]):
            flat = _flatten_dense_tensors(bucket)
            dist.all_reduce(flat)
            flat /= self.world_size
            for grad, synced in zip(bucket, _unflatten_dense_tensors(flat, bucket)):
                grad.copy_(synced)


def _buckets(grads: List[torch.Tensor]) -> List[List[torch.Tensor]]:
    buckets: Dict[tuple, List[List[torch.Tensor]]] = {}
    for grad in grads:
        group = buckets.setdefault((grad.device, grad.dtype), [[]])
        if group[-1] and sum(g.numel() * g.element_size() for g in group[-1]) >= _BUCKET_BYTES:
            group.append([])
        group[-1].append(grad)
    return [bucket for group in buckets.values() for bucket in group]


def init_distributed(device_name: str, timeout_s: float = 1800.0,
                     env: Optional[Mapping[str, str]] = None) -> tuple:
    """Join the job torchrun describes in ``env`` (RANK, WORLD_SIZE, LOCAL_RANK); a plain run is one process.

    ``timeout_s`` bounds every collective (gloo) and the NCCL watchdog, so a rank waiting for a dead peer
    fails instead of hanging.

    Returns:
        (DistContext, torch.device): CUDA ranks use ``cuda:LOCAL_RANK`` with NCCL, CPU ranks use gloo.
    """
    env = os.environ if env is None else env
    world_size = int(env.get("WORLD_SIZE", "1"))
    ctx = DistContext(int(env.get("RANK", "0")), world_size, int(env.get("LOCAL_RANK", "0")))
    device = resolve_device(device_name)
    if not ctx.enabled:
        return ctx, device
    if device.type == "cuda":
        if ctx.local_rank >= torch.cuda.device_count():
            raise ConfigError(f"LOCAL_RANK {ctx.local_rank} has no GPU ({torch.cuda.device_count()} visible): "
                              "start at most one process per GPU")
        device = torch.device("cuda", ctx.local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", rank=ctx.rank,
                                world_size=world_size, timeout=datetime.timedelta(seconds=timeout_s))
    logger.info("rank %d of %d on %s", ctx.rank, world_size, device)
    return ctx, device


def shutdown_distributed() -> None:
    """Leave the process group (a no-op in a single process)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def prepare_norms(model: nn.Module, norm_names: Iterable[str], ctx: DistContext, device: torch.device) -> nn.Module:
    """Under DDP with any ``syncBN`` norm, turn every BatchNorm into SyncBatchNorm (CUDA only: torch's
    SyncBatchNorm has no CPU kernel); elsewhere BN statistics stay per rank, as in fast-reid."""
    if not ctx.enabled or "syncBN" not in set(norm_names):
        return model
    if device.type != "cuda":
        raise ConfigError("norm 'syncBN' under multi-process training needs CUDA (torch's SyncBatchNorm has no "
                          "CPU kernel); use 'BN' on CPU")
    return nn.SyncBatchNorm.convert_sync_batchnorm(model)
