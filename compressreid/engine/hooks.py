"""Training hooks: LR schedule, layer freezing, progress with ETA, tensorboard, periodic checkpoints."""

from __future__ import annotations

import logging
import os
import random
from typing import Callable, Dict, Sequence

import numpy as np
import torch
from tqdm import tqdm

from compressreid.checkpoint import save_checkpoint
from compressreid.engine.loop import HookBase
from compressreid.engine.optim import set_lr

logger = logging.getLogger(__name__)


class LRScheduleHook(HookBase):
    """Sets every group's LR from a pure function of the iteration before each step."""

    def __init__(self, factor_at: Callable[[int], float]):
        self.factor_at = factor_at

    def before_step(self) -> None:
        set_lr(self.loop.optimizer, self.factor_at(self.loop.iter))


class FreezeLayersHook(HookBase):
    """Freezes modules whose names start with ``prefixes`` for the first ``iters`` iterations."""

    def __init__(self, prefixes: Sequence[str], iters: int):
        self.prefixes, self.iters = tuple(prefixes), iters

    def _set(self, trainable: bool) -> None:
        for name, param in self.loop.task.model.named_parameters():
            if name.startswith(self.prefixes):
                param.requires_grad_(trainable)

    def before_step(self) -> None:
        if self.prefixes and self.iters:
            self._set(self.loop.iter >= self.iters)


class ProgressHook(HookBase):
    """A tqdm bar with ETA and the latest losses (also logged every ``log_period`` iterations)."""

    def __init__(self, log_period: int = 20, enabled: bool = True):
        self.log_period, self.enabled = log_period, enabled
        self.bar = None

    def before_train(self) -> None:
        self.bar = tqdm(total=self.loop.max_iter, initial=self.loop.start_iter, desc="train", unit="it",
                        disable=not self.enabled, dynamic_ncols=True)

    def after_step(self) -> None:
        losses = self.loop.last_losses
        self.bar.set_postfix({k: f"{v:.3f}" for k, v in losses.items()}, refresh=False)
        self.bar.update(1)
        if self.loop.iter % self.log_period == 0 or self.loop.iter == self.loop.max_iter:
            lr = self.loop.optimizer.param_groups[0]["lr"]
            logger.info("iter %d/%d lr %.3g %s", self.loop.iter, self.loop.max_iter, lr,
                        " ".join(f"{k}={v:.4f}" for k, v in losses.items()))

    def after_train(self) -> None:
        self.bar.close()


class TensorboardHook(HookBase):
    """Writes the losses and LR as tensorboard scalars under ``log_dir``."""

    def __init__(self, log_dir: str, period: int = 10):
        self.log_dir, self.period = log_dir, period
        self.writer = None

    def before_train(self) -> None:
        from torch.utils.tensorboard import SummaryWriter  # imported lazily: tensorboard is slow to import

        self.writer = SummaryWriter(self.log_dir)

    def after_step(self) -> None:
        if self.loop.iter % self.period == 0:
            for name, value in self.loop.last_losses.items():
                self.writer.add_scalar(f"loss/{name}", value, self.loop.iter)
            self.writer.add_scalar("lr", self.loop.optimizer.param_groups[0]["lr"], self.loop.iter)

    def after_train(self) -> None:
        self.writer.close()


def rng_state() -> Dict[str, object]:
    return {"torch": torch.get_rng_state(), "numpy": np.random.get_state()[1], "python": random.getstate()[1]}


class CheckpointHook(HookBase):
    """Atomically saves model, optimizer, iteration, RNG and hook states every ``period`` iterations."""

    def __init__(self, directory: str, period: int, extra: Callable[[], Dict[str, object]] = dict):
        self.directory, self.period, self.extra = directory, period, extra

    def save(self, name: str) -> str:
        loop = self.loop
        hook_states = {type(h).__name__: h.state_dict() for h in loop.hooks if h.state_dict()}
        path = os.path.join(self.directory, name)
        save_checkpoint(path, loop.task.model, optimizer=loop.optimizer.state_dict(), iteration=loop.iter,
                        hooks=hook_states, **self.extra())
        return path

    def after_step(self) -> None:
        if self.period and self.loop.iter % self.period == 0 and self.loop.iter < self.loop.max_iter:
            self.save("last_checkpoint.pth")
