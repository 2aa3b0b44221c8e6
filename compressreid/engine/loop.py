"""A small training loop: a task owns "forward + loss", hooks run in a written-down order.

Hook order within one iteration: ``before_step`` of every hook in list order, the step, then
``after_step`` in list order. Tools put the LR scheduler first (the step must see this
iteration's LR) and the checkpointer last (it must save state that includes every other hook's update).
"""

from __future__ import annotations

from typing import Dict, Iterable, Iterator, List, Protocol

import torch


class TrainingTask(Protocol):
    """What the loop drives: one optimisation step on one batch, returning named scalar losses."""

    model: torch.nn.Module

    def training_step(self, batch: Dict[str, object]) -> Dict[str, torch.Tensor]: ...


class HookBase:
    """Override any of these; ``state_dict``/``load_state_dict`` make a hook resumable."""

    loop: "TrainLoop"

    def before_train(self) -> None: ...
    def before_step(self) -> None: ...
    def after_step(self) -> None: ...
    def after_train(self) -> None: ...

    def state_dict(self) -> Dict[str, object]:
        return {}

    def load_state_dict(self, state: Dict[str, object]) -> None: ...


class TrainLoop:
    """Runs ``task.training_step`` from ``start_iter`` to ``max_iter`` with an optimizer and hooks."""

    def __init__(self, task: TrainingTask, optimizer: torch.optim.Optimizer, batches: Iterable,
                 max_iter: int, hooks: List[HookBase], start_iter: int = 0, grad_clip=None):
        self.task, self.optimizer, self.max_iter = task, optimizer, max_iter
        self.iter = self.start_iter = start_iter
        self.hooks = hooks
        self.grad_clip = grad_clip
        self.last_losses: Dict[str, float] = {}
        self._batches: Iterator = iter(batches)
        for hook in hooks:
            hook.loop = self

    def run(self) -> None:
        for hook in self.hooks:
            hook.before_train()
        while self.iter < self.max_iter:
            for hook in self.hooks:
                hook.before_step()
            self.step()
            self.iter += 1  # hooks see the number of finished iterations
            for hook in self.hooks:
                hook.after_step()
        for hook in self.hooks:
            hook.after_train()

    def step(self) -> None:
        self.task.model.train()
        losses = self.task.training_step(next(self._batches))
        total = torch.stack(list(losses.values())).sum()
        if not torch.isfinite(total):
            raise FloatingPointError(f"loss became {total.item()} at iteration {self.iter}: {self._fmt(losses)}")
        self.optimizer.zero_grad(set_to_none=True)
        total.backward()
        if self.grad_clip is not None:
            self.grad_clip(self.task.model.parameters())
        self.optimizer.step()
        self.last_losses = {name: float(value.detach()) for name, value in losses.items()}
        self.last_losses["total"] = float(total.detach())

    @staticmethod
    def _fmt(losses: Dict[str, torch.Tensor]) -> str:
        return ", ".join(f"{k}={float(v):.4g}" for k, v in losses.items())
