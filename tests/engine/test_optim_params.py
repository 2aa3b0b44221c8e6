"""build_optimizer: a module or (name, parameter) pairs, the same parameter-group rules for both."""

import pytest
import torch
from torch import nn

from compressreid.config import get_cfg
from compressreid.engine.optim import build_optimizer
from compressreid.errors import ConfigError


class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.backbone = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
        self.heads = nn.Linear(4, 2)


def solver_cfg(opt="SGD"):
    cfg = get_cfg()
    s = cfg.SOLVER
    s.OPT, s.BASE_LR, s.HEADS_LR_FACTOR, s.BIAS_LR_FACTOR = opt, 0.1, 10.0, 2.0
    s.WEIGHT_DECAY, s.WEIGHT_DECAY_BIAS, s.WEIGHT_DECAY_NORM = 1e-4, 0.0, 5e-5
    return cfg


def groups(optimizer):
    return [(group["lr"], group["weight_decay"], tuple(group["params"][0].shape)) for group in optimizer.param_groups]


def test_named_parameters_give_the_same_groups_as_the_module():
    model = Tiny()
    assert groups(build_optimizer(solver_cfg(), model)) == groups(build_optimizer(solver_cfg(),
                                                                                  model.named_parameters()))


def test_rules_follow_names_and_shapes():
    model = Tiny()
    adapter = nn.Sequential(nn.Conv2d(4, 8, 1, bias=True), nn.BatchNorm2d(8))
    named = [*model.named_parameters(), *(("distill." + n, p) for n, p in adapter.named_parameters())]
    optimizer = build_optimizer(solver_cfg(), iter(named))  # any iterable of pairs, a generator included
    by_name = {name: (g["lr"], g["weight_decay"]) for (name, _), g in zip(named, optimizer.param_groups)}
    assert by_name["backbone.0.weight"] == pytest.approx((0.1, 1e-4))
    assert by_name["backbone.1.weight"] == pytest.approx((0.1, 5e-5))  # norm weight: norm decay
    assert by_name["heads.weight"] == pytest.approx((1.0, 1e-4))  # heads LR factor
    assert by_name["heads.bias"] == pytest.approx((2.0, 0.0))  # heads and bias factors both apply
    # adapters are not heads, but their biases and norms follow the same rules as the student's
    assert by_name["distill.0.weight"] == pytest.approx((0.1, 1e-4))
    assert by_name["distill.0.bias"] == pytest.approx((0.2, 0.0))
    assert by_name["distill.1.weight"] == pytest.approx((0.1, 5e-5))
    assert all(g["initial_lr"] == g["lr"] for g in optimizer.param_groups)


def test_frozen_parameters_are_left_out_and_nothing_to_train_is_an_error():
    model = Tiny()
    model.backbone.requires_grad_(False)
    optimizer = build_optimizer(solver_cfg("AdamW"), model)
    assert isinstance(optimizer, torch.optim.AdamW)
    assert {id(p) for g in optimizer.param_groups for p in g["params"]} == {id(p) for p in model.heads.parameters()}
    model.requires_grad_(False)
    with pytest.raises(ConfigError, match="nothing to optimise"):
        build_optimizer(solver_cfg(), model)
