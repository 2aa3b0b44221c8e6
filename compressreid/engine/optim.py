"""Optimizer and per-iteration LR schedule (warmup, multistep or cosine) built from SOLVER."""

from __future__ import annotations

import functools
import math
from typing import Callable, Iterable, List, Optional, Tuple, Union

import torch
from torch import nn
from yacs.config import CfgNode

from compressreid.errors import ConfigError

NamedParameters = Iterable[Tuple[str, nn.Parameter]]


def build_optimizer(cfg: CfgNode, params: Union[nn.Module, NamedParameters]) -> torch.optim.Optimizer:
    """Parameter groups with fast-reid's LR factors and weight decays for biases, norms and heads.

    Args:
        params: a module, or ``(name, parameter)`` pairs, e.g. a distillation task's student parameters plus
            its adapters (``DistillationTask.named_trainable_parameters``), which then follow the same rules.
    """
    s = cfg.SOLVER
    named = params.named_parameters() if isinstance(params, nn.Module) else params
    groups = []
    for name, param in named:
        if not param.requires_grad:
            continue
        lr, decay = s.BASE_LR, s.WEIGHT_DECAY
        if name.startswith("heads"):
            lr *= s.HEADS_LR_FACTOR
        if name.endswith("bias"):
            lr, decay = lr * s.BIAS_LR_FACTOR, s.WEIGHT_DECAY_BIAS
        elif param.ndim == 1:  # norm weights
            decay = s.WEIGHT_DECAY_NORM
        groups.append({"params": [param], "lr": lr, "initial_lr": lr, "weight_decay": decay})
    if not groups:
        raise ConfigError("nothing to optimise: every parameter is frozen (requires_grad False)")
    if s.OPT == "SGD":
        return torch.optim.SGD(groups, momentum=s.MOMENTUM, nesterov=s.NESTEROV)
    if s.OPT in ("Adam", "AdamW"):
        return getattr(torch.optim, s.OPT)(groups)
    raise ConfigError(f"SOLVER.OPT '{s.OPT}' must be SGD, Adam or AdamW")


def lr_factor(cfg: CfgNode, iteration: int, iters_per_epoch: int) -> float:
    """Multiplier of each group's initial LR at ``iteration`` (a pure function, so resuming is exact)."""
    s = cfg.SOLVER
    if iteration < s.WARMUP_ITERS:
        progress = iteration / max(1, s.WARMUP_ITERS)
        if s.WARMUP_METHOD == "linear":
            warm = s.WARMUP_FACTOR * (1 - progress) + progress
        elif s.WARMUP_METHOD == "constant":
            warm = s.WARMUP_FACTOR
        elif s.WARMUP_METHOD == "exp":
            warm = s.WARMUP_FACTOR ** (1 - progress)
        else:
            raise ConfigError(f"SOLVER.WARMUP_METHOD '{s.WARMUP_METHOD}' must be linear, constant or exp")
    else:
        warm = 1.0
    epoch = iteration / max(1, iters_per_epoch)
    if s.SCHED == "MultiStepLR":
        decay = s.GAMMA ** sum(epoch >= step for step in s.STEPS)
    elif s.SCHED == "CosineAnnealingLR":
        span = max(1e-9, s.MAX_EPOCH - s.DELAY_EPOCHS)
        t = min(1.0, max(0.0, (epoch - s.DELAY_EPOCHS) / span))
        floor = s.ETA_MIN_LR / s.BASE_LR
        decay = floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * t))
    else:
        raise ConfigError(f"SOLVER.SCHED '{s.SCHED}' must be MultiStepLR or CosineAnnealingLR")
    return warm * decay


def set_lr(optimizer: torch.optim.Optimizer, factor: float) -> List[float]:
    for group in optimizer.param_groups:
        group["lr"] = group["initial_lr"] * factor
    return [group["lr"] for group in optimizer.param_groups]


def build_grad_clip(cfg: CfgNode) -> Optional[Callable[[List[nn.Parameter]], object]]:
    """SOLVER.CLIP_GRADIENTS as a callable on the parameters (None when disabled)."""
    clip = cfg.SOLVER.CLIP_GRADIENTS
    if not clip.ENABLED:
        return None
    if clip.CLIP_TYPE == "norm":
        return functools.partial(nn.utils.clip_grad_norm_, max_norm=clip.CLIP_VALUE, norm_type=clip.NORM_TYPE)
    if clip.CLIP_TYPE == "value":
        return functools.partial(nn.utils.clip_grad_value_, clip_value=clip.CLIP_VALUE)
    raise ConfigError(f"SOLVER.CLIP_GRADIENTS.CLIP_TYPE '{clip.CLIP_TYPE}' must be 'norm' or 'value'")
