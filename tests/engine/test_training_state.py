"""Resumable state: the loop, hooks and generators round-trip through a weights_only checkpoint exactly."""

from __future__ import annotations

import random
from typing import Dict

import numpy as np
import pytest
import torch
from torch import nn

from compressreid.checkpoint import read_checkpoint
from compressreid.config import get_cfg
from compressreid.engine.hooks import ThroughputHook, TrainLogHook
from compressreid.engine.loop import HookBase, TrainLoop
from compressreid.engine.resume import (check_resumable, config_differences, preserved_rng, restore_training_state,
                                        rng_states, save_training_state, set_rng_states)
from compressreid.errors import CheckpointError, ConfigError


class NoisyTask:
    """A tiny regression whose step draws from every generator, so a wrong RNG restore changes the result."""

    def __init__(self):
        torch.manual_seed(0)
        self.model = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.Linear(8, 1))

    def training_step(self, batch: Dict[str, object]) -> Dict[str, torch.Tensor]:
        x = batch["x"] + 0.1 * torch.randn_like(batch["x"]) + float(np.random.rand()) + random.random()
        return {"mse": ((self.model(x) - batch["y"]) ** 2).mean()}


def batches(start=0):
    i = start
    while True:
        g = torch.Generator().manual_seed(i)
        yield {"x": torch.randn(6, 4, generator=g), "y": torch.randn(6, 1, generator=g)}
        i += 1


def make_loop(start=0, max_iter=6, log=None):
    task = NoisyTask()
    optimizer = torch.optim.Adam(task.model.parameters(), lr=0.01)
    hooks = [ThroughputHook(6, warmup=1)] + ([TrainLogHook(log)] if log else [])
    return TrainLoop(task, optimizer, batches(start), max_iter, hooks, start_iter=start)


class StopAt(HookBase):
    def __init__(self, iteration):
        self.iteration = iteration

    def after_step(self):
        if self.loop.iter == self.iteration:
            raise KeyboardInterrupt


def test_interrupted_and_resumed_loop_matches_the_uninterrupted_one(tmp_path):
    cfg = get_cfg()
    torch.manual_seed(1), np.random.seed(1), random.seed(1)
    full = make_loop(log=str(tmp_path / "full.jsonl"))
    full.run()

    torch.manual_seed(1), np.random.seed(1), random.seed(1)
    first = make_loop(log=str(tmp_path / "resumed.jsonl"))
    first.hooks.append(StopAt(4))
    first.hooks[-1].loop = first
    with pytest.raises(KeyboardInterrupt):
        first.run()  # stops after iteration 4's hooks, as a kill right after a checkpoint would
    save_training_state(str(tmp_path / "last_checkpoint.pth"), first, cfg)
    torch.manual_seed(99), np.random.seed(99), random.seed(99)  # a new process starts elsewhere

    state = read_checkpoint(str(tmp_path / "last_checkpoint.pth"))  # weights_only=True
    resumed = make_loop(start=4, log=str(tmp_path / "resumed.jsonl"))
    restore_training_state(resumed, state)
    assert resumed.iter == 4 and resumed.hooks[0].iters == first.hooks[0].iters
    resumed.run()
    for a, b in zip(full.task.model.state_dict().values(), resumed.task.model.state_dict().values()):
        assert torch.equal(a, b)
    assert (tmp_path / "full.jsonl").read_text().count("\n") == (tmp_path / "resumed.jsonl").read_text().count("\n")
    assert resumed.summary["train_images_per_second"] > 0


def test_rng_states_round_trip_and_preserved_rng(tmp_path):
    torch.manual_seed(3), np.random.seed(3), random.seed(3)
    np.random.rand(), random.random(), torch.rand(1)  # move off the seeded positions
    saved = rng_states()
    torch.save(saved, tmp_path / "rng.pth")
    draws = (torch.rand(2), np.random.rand(2), random.random())
    set_rng_states(torch.load(tmp_path / "rng.pth", weights_only=True))
    again = (torch.rand(2), np.random.rand(2), random.random())
    assert torch.equal(draws[0], again[0]) and np.array_equal(draws[1], again[1]) and draws[2] == again[2]
    before = rng_states()
    with preserved_rng():
        torch.rand(5), np.random.rand(5), random.random()
    after = rng_states()
    assert torch.equal(after["torch"], before["torch"]) and after["python"] == before["python"]
    assert torch.equal(after["numpy"]["keys"], before["numpy"]["keys"]) and after["numpy"]["pos"] == before["numpy"]["pos"]


def test_config_differences_ignore_paths_and_workers_only():
    saved = get_cfg()
    now = get_cfg()
    now.merge_from_list(["OUTPUT_DIR", "elsewhere", "DATASETS.ROOT", "/data", "MODEL.WEIGHTS", "w.pth",
                         "DATALOADER.NUM_WORKERS", "8", "MODEL.BACKBONE.PRETRAIN_PATH", "r50.pth"])
    assert config_differences(saved.dump(), now) == []
    now.merge_from_list(["SOLVER.BASE_LR", "0.1", "INPUT.SIZE_TRAIN", "[32, 16]"])
    assert config_differences(saved.dump(), now) == ["INPUT.SIZE_TRAIN: [256, 128] -> [32, 16]",
                                                     "SOLVER.BASE_LR: 0.00035 -> 0.1"]


def test_check_resumable_errors(tmp_path):
    cfg = get_cfg()
    with pytest.raises(CheckpointError, match="no last_checkpoint.pth"):
        check_resumable(str(tmp_path), cfg)
    torch.save({"model": {}}, tmp_path / "last_checkpoint.pth")  # a weights-only file, e.g. model_final
    with pytest.raises(CheckpointError, match="lacks training state"):
        check_resumable(str(tmp_path), cfg)
    loop = make_loop()
    save_training_state(str(tmp_path / "last_checkpoint.pth"), loop, cfg)
    assert check_resumable(str(tmp_path), cfg).endswith("last_checkpoint.pth")
    cfg.merge_from_list(["SEED", "5"])
    with pytest.raises(ConfigError, match=r"SEED: 0 -> 5"):
        check_resumable(str(tmp_path), cfg)
