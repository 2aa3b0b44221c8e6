"""The training loop ends cleanly: a diverging loss is a configuration error naming the iteration and the remedy,
and the loader's worker processes are stopped by the loop, not by whichever process garbage-collects it."""

from __future__ import annotations

import gc

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset
from torch.utils.data.dataloader import _MultiProcessingDataLoaderIter

from compressreid.engine.loop import HookBase, TrainLoop
from compressreid.errors import ConfigError, TrainingDiverged


class LinearTask:
    def __init__(self, scale: float = 1.0):
        self.model, self.scale = torch.nn.Linear(2, 1), scale

    def training_step(self, batch):
        return {"mse": self.model(batch[0]).pow(2).mean() * self.scale}


def loop_over(loader, task, max_iter=3):
    optimizer = torch.optim.SGD(task.model.parameters(), lr=0.5)
    return TrainLoop(task, optimizer, loader, max_iter, [HookBase()])


def test_a_non_finite_loss_is_a_config_error_naming_iteration_and_learning_rate():
    loop = loop_over([(torch.ones(4, 2),)] * 3, LinearTask(scale=float("nan")))
    with pytest.raises(TrainingDiverged) as info:
        loop.run()
    assert isinstance(info.value, ConfigError)  # exit code 2, not an internal error
    message = str(info.value)
    assert "at iteration 1" in message and "learning rate 0.5" in message and "SOLVER.BASE_LR" in message


def live_worker_iterators():
    return [o for o in gc.get_objects() if type(o) is _MultiProcessingDataLoaderIter and not o._shutdown]


def test_the_loop_stops_its_loader_workers_when_it_ends():
    """Left alive, the iterator is collected later, possibly in a forked worker of another loader, where its
    shutdown prints "AssertionError: can only test a child process" once per worker (seen after pruning)."""
    gc.collect()
    gc.disable()  # as in a long run: the loop <-> hooks cycle is not collected right away
    try:
        loader = DataLoader(TensorDataset(torch.randn(64, 2)), batch_size=8, num_workers=2, persistent_workers=True)
        loop = loop_over(loader, LinearTask())
        del loader
        loop.run()
        assert loop.iter == 3
        assert live_worker_iterators() == []
    finally:
        gc.enable()
