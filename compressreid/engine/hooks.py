"""Training hooks: LR schedule, layer freezing, progress with ETA, tensorboard, a JSON-lines log, throughput,
fault injection and periodic checkpoints."""

from __future__ import annotations

import json
import logging
import os
from typing import Callable, Dict, Sequence

from tqdm import tqdm
from yacs.config import CfgNode

from compressreid.engine.io import atomic_write_text
from compressreid.engine.loop import HookBase
from compressreid.engine.optim import set_lr
from compressreid.engine.resume import save_training_state

logger = logging.getLogger(__name__)

# What a training run records in metrics.json (ThroughputHook), gate-able like any metric.
TRAINING_METRICS = ("train_images_per_second", "train_seconds_per_iter")


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
        for name, value in self.loop.pending_scalars.items():  # e.g. evaluation metrics
            self.writer.add_scalar(name, value, self.loop.iter)
        self.loop.pending_scalars.clear()

    def after_train(self) -> None:
        self.writer.close()


class TrainLogHook(HookBase):
    """Appends one JSON line per iteration (iteration, lr, losses averaged over ranks) to ``path``.

    A resumed run first drops the lines past its checkpoint, so the file reads as one uninterrupted run.
    """

    def __init__(self, path: str):
        self.path = path

    def before_train(self) -> None:
        kept, start = [], self.loop.start_iter
        if start and os.path.isfile(self.path):
            with open(self.path, "r", encoding="utf-8") as handle:
                kept = [line for line in handle if line.strip() and json.loads(line)["iteration"] <= start]
        atomic_write_text(self.path, "".join(kept))

    def after_step(self) -> None:
        record = {"iteration": self.loop.iter, "lr": self.loop.optimizer.param_groups[0]["lr"], **self.loop.last_losses}
        with open(self.path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")


class ThroughputHook(HookBase):
    """Training images per second over the step times (data loading included; hooks such as evaluation and
    checkpointing excluded), skipping each process's first ``warmup`` iterations; accumulates across resumes."""

    def __init__(self, images_per_iter: int, warmup: int = 5):
        self.images_per_iter, self.warmup = images_per_iter, warmup
        self.seconds, self.iters, self._seen = 0.0, 0, 0

    def after_step(self) -> None:
        self._seen += 1
        # tiny runs still get a measurement: never skip more than half of this process's iterations
        if self._seen > min(self.warmup, (self.loop.max_iter - self.loop.start_iter) // 2):
            self.seconds += self.loop.last_step_seconds
            self.iters += 1

    def after_train(self) -> None:
        if not self.iters or self.seconds <= 0:
            return
        rate = self.iters * self.images_per_iter / self.seconds
        self.loop.summary.update({"train_images_per_second": round(rate, 2),
                                  "train_seconds_per_iter": round(self.seconds / self.iters, 4)})
        logger.info("training throughput: %.1f images/s (%.3f s/iteration over %d measured iterations)",
                    rate, self.seconds / self.iters, self.iters)

    def state_dict(self) -> Dict[str, object]:
        return {"seconds": self.seconds, "iters": self.iters}

    def load_state_dict(self, state: Dict[str, object]) -> None:
        self.seconds, self.iters = float(state["seconds"]), int(state["iters"])


class RaiseAtIterationHook(HookBase):
    """Fault injection for tests of failure handling: raises after iteration ``iteration`` on rank ``rank``."""

    def __init__(self, iteration: int, rank: int = 0):
        self.iteration, self.rank = iteration, rank

    def after_step(self) -> None:
        if self.loop.iter == self.iteration and self.loop.dist.rank == self.rank:
            raise RuntimeError(f"injected fault on rank {self.rank} at iteration {self.iteration}")


class CheckpointHook(HookBase):
    """Every ``period`` iterations, atomically saves the full training state (see engine.resume) to ``path``."""

    def __init__(self, path: str, period: int, cfg: CfgNode):
        self.path, self.period, self.cfg = path, period, cfg

    def save(self) -> str:
        return save_training_state(self.path, self.loop, self.cfg)

    def after_step(self) -> None:
        if self.period and self.loop.iter % self.period == 0 and self.loop.iter < self.loop.max_iter:
            self.save()
