"""compressreid.quant.speed: FP32 and INT8 timed in turn, the verdict every round must agree on, and which precision
a target ships (QUANT.BENCHMARK)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from compressreid.config import get_cfg
from compressreid.errors import ConfigError
from compressreid.export.conventions import get_convention
from compressreid.quant.speed import (SpeedPolicy, check_speed_policy, shipping_decision, speed_verdict,
                                      time_against_fp32)
from tiny_models import Sleeper


def policy(**changes) -> SpeedPolicy:
    values = dict(batches=(1, 4), iters=6, rounds=3, threads=1, deploy_batch=1, when_slower="warn")
    return SpeedPolicy(**{**values, **changes})


def test_the_files_are_timed_in_turn_and_the_speedup_is_the_median_round():
    rgb = get_convention("rgb255")
    latency = time_against_fp32(policy(), Sleeper(12.0), Sleeper(0.0), (8, 4), rgb, rgb)
    for n in (1, 4):
        assert latency["int8"][f"batch{n}"]["iters"] == latency["fp32"][f"batch{n}"]["iters"] == 6  # 3 rounds x 2
        low, high = latency[f"speedup_batch{n}_range"]
        assert low <= latency[f"speedup_batch{n}"] <= high < 1.0  # the sleeping "INT8" lost every round
    assert speed_verdict(latency, 1) == "slower"
    assert shipping_decision(policy(when_slower="ship_fp32"), latency, accepted=True)["ships"] == "fp32"
    faster = time_against_fp32(policy(batches=(1,)), Sleeper(0.0), Sleeper(12.0), (8, 4), rgb, rgb)
    assert speed_verdict(faster, 1) == "faster" and faster["speedup_batch1_range"][0] > 1.0


def test_the_rounds_time_the_two_files_in_turn_each_going_first_in_every_other_round():
    """In turn, round by round (not all of one file's calls, then the other's): the drift of a shared machine
    reaches both files' rounds alike; the order alternates, so a bias of the second place in a round (measured in
    OpenVINO: an A/A pair called the second file slower 8 times in 100 with a fixed order) falls on both. Three
    warm-up calls each first."""
    calls = []

    class Recorder(nn.Module):
        def __init__(self, name: str):
            super().__init__()
            self.name = name

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            calls.append(self.name)
            return x

    rgb = get_convention("rgb255")
    time_against_fp32(policy(batches=(1,), iters=6, rounds=3), Recorder("int8"), Recorder("fp32"), (8, 4), rgb, rgb)
    warmup, timed = calls[:6], calls[6:]
    assert warmup == ["fp32"] * 3 + ["int8"] * 3
    assert timed == ["fp32"] * 2 + ["int8"] * 4 + ["fp32"] * 4 + ["int8"] * 2  # 3 rounds of 2 calls each
    calls.clear()  # a third file (the fallback's all-INT8 one) joins the same rounds and the rotation
    latency = time_against_fp32(policy(batches=(1,), iters=3, rounds=3), Recorder("int8"), Recorder("fp32"), (8, 4),
                                rgb, rgb, also={"all_int8": Recorder("all_int8")})
    assert calls[9:] == ["fp32", "int8", "all_int8", "int8", "all_int8", "fp32", "all_int8", "fp32", "int8"]
    assert latency["all_int8"]["batch1"]["iters"] == 3 and "speedup_batch1" in latency


def test_only_a_verdict_every_round_agrees_on_ships_fp32_by_default_and_warn_keeps_int8():
    def latency(low, high):
        return {"speedup_batch1": (low + high) / 2, "speedup_batch1_range": [low, high]}

    assert speed_verdict(latency(0.8, 1.1), 1) == "level"  # straddles 1: never changes what ships
    assert speed_verdict(latency(1.1, 1.3), 1) == "faster" and speed_verdict(latency(0.5, 0.9), 1) == "slower"
    assert speed_verdict({"int8": {}}, 1) is None  # not timed against FP32 here (TensorRT, a stand-in runtime)
    ask = SpeedPolicy.from_config(get_cfg().QUANT.BENCHMARK)  # the default: ship_fp32
    assert ask.when_slower == "ship_fp32"
    assert shipping_decision(ask, latency(0.8, 1.1), True)["ships"] == "int8"
    assert shipping_decision(ask, latency(0.5, 0.9), False)["ships"] == "int8"  # a rejected file fails as it is
    assert shipping_decision(policy(), latency(0.5, 0.9), True)["ships"] == "int8"  # warn
    decision = shipping_decision(ask, latency(0.5, 0.9), True)
    assert decision == {"ships": "fp32", "deploy_batch": 1, "int8_vs_fp32": "slower", "when_slower": "ship_fp32",
                        "speedup": 0.7, "speedup_range": [0.5, 0.9]}
    assert shipping_decision(ask, {"int8": {}}, True) == {
        "ships": "int8", "deploy_batch": 1, "int8_vs_fp32": "not timed against FP32 here", "when_slower": "ship_fp32"}


def test_iters_are_spread_over_no_more_rounds_than_iters():
    assert (policy(iters=20, rounds=5).timed_rounds, policy(iters=20, rounds=5).calls) == (5, 4)
    assert (policy(iters=2, rounds=5).timed_rounds, policy(iters=2, rounds=5).calls) == (2, 1)
    assert (policy(iters=7, rounds=3).timed_rounds, policy(iters=7, rounds=3).calls) == (3, 3)


@pytest.mark.parametrize("key,value,words", [
    ("WHEN_SLOWER", "fail", "QUANT.BENCHMARK.WHEN_SLOWER 'fail' is unknown"),
    ("DEPLOY_BATCH", 8, "QUANT.BENCHMARK.DEPLOY_BATCH 8 is not one of QUANT.BENCHMARK.BATCHES [1, 32]"),
    ("ROUNDS", 0, "QUANT.BENCHMARK.ITERS and ROUNDS must be >= 1"),
    ("BATCHES", (0, 1), "QUANT.BENCHMARK.BATCHES must be positive"),
])
def test_a_benchmark_the_run_cannot_time_or_decide_on_is_refused(key, value, words):
    b = get_cfg().QUANT.BENCHMARK.clone()
    b.defrost()
    b.BATCHES = (1, 32)
    b[key] = value
    with pytest.raises(ConfigError, match=words.replace("[", r"\[").replace("]", r"\]")):
        check_speed_policy(b)
    check_speed_policy(get_cfg().QUANT.BENCHMARK)  # the defaults pass
