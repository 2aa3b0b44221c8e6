"""A small training loop: a task owns "forward + loss", hooks run in a written-down order.

Hook order within one iteration: ``before_step`` of every hook in list order, the step, then
``after_step`` in list order. Tools put the LR scheduler first (the step must see this
iteration's LR), evaluation before tensorboard (which writes what evaluation reported), and the
checkpointer last (it must save state that includes every other hook's update).
"""

from __future__ import annotations

import time
from typing import Callable, Dict, Iterable, Iterator, List, Optional, Protocol

import torch

from compressreid.data.build import close_batches
from compressreid.engine.distributed import DistContext
from compressreid.errors import TrainingDiverged


class TrainingTask(Protocol):
    """What the loop drives: one forward + loss on one batch, returning named scalar losses.

    Optional: ``train(mode)`` (called instead of ``model.train()``, e.g. to keep teachers in eval mode) and
    ``state_dict``/``load_state_dict`` for state outside ``model`` that a resumed run needs.
    """

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
    """Runs ``task.training_step`` from ``start_iter`` to ``max_iter`` with an optimizer and hooks.

    Args:
        task: forward + loss (see ``TrainingTask``).
        optimizer: updates every trainable parameter; its parameters are the ones averaged across ranks.
        batches: an iterable of local batches, positioned at ``start_iter``.
        grad_clip: called on the parameters after unscaling, before the optimizer step.
        scaler: a CUDA GradScaler for fp16 AMP (a disabled one when None).
        dist: this process's place in a multi-process job.
    """

    def __init__(self, task: TrainingTask, optimizer: torch.optim.Optimizer, batches: Iterable, max_iter: int,
                 hooks: List[HookBase], start_iter: int = 0,
                 grad_clip: Optional[Callable[[List[torch.nn.Parameter]], object]] = None,
                 scaler: Optional[torch.amp.GradScaler] = None, dist: DistContext = DistContext()):
        self.task, self.optimizer, self.max_iter = task, optimizer, max_iter
        self.iter = self.start_iter = start_iter
        self.hooks = hooks
        self.grad_clip = grad_clip
        self.scaler = scaler if scaler is not None else torch.amp.GradScaler("cuda", enabled=False)
        self.dist = dist
        self.last_losses: Dict[str, float] = {}
        self.last_step_seconds = 0.0
        self.pending_scalars: Dict[str, float] = {}  # reported by hooks this iteration, written by tensorboard
        self.summary: Dict[str, float] = {}  # run-level results hooks report for metrics.json
        self._params = [p for group in optimizer.param_groups for p in group["params"]]
        self._batches: Iterator = iter(batches)
        for hook in hooks:
            hook.loop = self

    def run(self) -> None:
        try:
            for hook in self.hooks:
                hook.before_train()
            while self.iter < self.max_iter:
                for hook in self.hooks:
                    hook.before_step()
                started = time.perf_counter()
                self.step()
                self.last_step_seconds = time.perf_counter() - started
                self.iter += 1  # hooks see the number of finished iterations
                for hook in self.hooks:
                    hook.after_step()
            for hook in self.hooks:
                hook.after_train()
        finally:
            self.close()

    def close(self) -> None:
        """Stop the loader's worker processes now, in this process (see ``close_batches``)."""
        close_batches(self._batches)
        self._batches = iter(())

    def step(self) -> None:
        if callable(getattr(self.task, "train", None)):
            self.task.train()
        else:
            self.task.model.train()
        losses = self.task.training_step(next(self._batches))
        total = torch.stack([value.float() for value in losses.values()]).sum()
        if not torch.isfinite(total):
            lr = self.optimizer.param_groups[0]["lr"]
            raise TrainingDiverged(f"training diverged: the loss became {total.item()} at iteration {self.iter + 1} "
                                   f"({self._fmt(losses)}, learning rate {lr:.3g}); lower SOLVER.BASE_LR or clip "
                                   "gradients (SOLVER.CLIP_GRADIENTS.ENABLED True)")
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(total).backward()
        self.dist.average_gradients(self._params)
        if self.grad_clip is not None:
            self.scaler.unscale_(self.optimizer)
            self.grad_clip(self._params)
        self.scaler.step(self.optimizer)  # skipped (and the scale lowered) when fp16 gradients overflowed
        self.scaler.update()
        local = {name: float(value.detach()) for name, value in losses.items()}
        local["total"] = float(total.detach())
        self.last_losses = self.dist.mean_scalars(local, total.device)

    def put_scalar(self, name: str, value: float) -> None:
        """Report a scalar at the current iteration (tensorboard writes it after this iteration's hooks)."""
        self.pending_scalars[name] = float(value)

    def state_dict(self) -> Dict[str, object]:
        """Everything besides the model and RNG that a resumed run needs: iteration, optimizer, scaler, hooks."""
        state: Dict[str, object] = {"iteration": self.iter, "optimizer": self.optimizer.state_dict(),
                                    "scaler": self.scaler.state_dict(), "hooks": {}}
        for key, hook in self._keyed_hooks().items():
            hook_state = hook.state_dict()
            if hook_state:
                state["hooks"][key] = hook_state
        if callable(getattr(self.task, "state_dict", None)):
            state["task"] = self.task.state_dict()
        return state

    def load_state_dict(self, state: Dict[str, object]) -> None:
        self.iter = self.start_iter = int(state["iteration"])
        self.optimizer.load_state_dict(state["optimizer"])
        if state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        hooks = self._keyed_hooks()
        for key, hook_state in state.get("hooks", {}).items():
            if key in hooks:
                hooks[key].load_state_dict(hook_state)
        if "task" in state:
            self.task.load_state_dict(state["task"])

    def _keyed_hooks(self) -> Dict[str, HookBase]:
        keyed: Dict[str, HookBase] = {}
        for hook in self.hooks:
            name = type(hook).__name__
            keyed[name if name not in keyed else f"{name}.{len(keyed)}"] = hook
        return keyed

    @staticmethod
    def _fmt(losses: Dict[str, torch.Tensor]) -> str:
        return ", ".join(f"{k}={float(v.detach()):.4g}" for k, v in losses.items())
