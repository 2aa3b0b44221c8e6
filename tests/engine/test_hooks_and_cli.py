"""Engine pieces around the loop: periodic evaluation, throughput in metrics.json, AMP/bf16 autocast, gradient
clipping, fault injection, single-process distributed helpers, and one-line errors from loader workers."""

from __future__ import annotations

import json
import types

import pytest
import torch
from torch import nn

from compressreid.cli import error_message, run_tool
from compressreid.config import get_cfg
from compressreid.engine.device import autocast
from compressreid.engine.distributed import DistContext, _buckets
from compressreid.engine.eval_hook import EvalHook
from compressreid.engine.hooks import RaiseAtIterationHook, ThroughputHook
from compressreid.engine.loop import TrainLoop
from compressreid.engine.optim import build_grad_clip
from compressreid.engine.run_dir import RunDirectory
from compressreid.errors import ConfigError, DataError
from compressreid.evaluation.evaluator import ReIDEvaluator


class LinearTask:
    def __init__(self):
        self.model = nn.Sequential(nn.Linear(3, 3), nn.Dropout(0.5))
        self.trained = 0

    def train(self, mode: bool = True):
        self.trained += 1
        self.model.train(mode)

    def training_step(self, batch):
        return {"loss": self.model(torch.ones(2, 3)).pow(2).mean()}


def loop_with(hooks, max_iter=4):
    task = LinearTask()
    return TrainLoop(task, torch.optim.SGD(task.model.parameters(), lr=0.1), iter(lambda: {}, None), max_iter, hooks)


def test_eval_hook_runs_every_period_but_not_at_the_end_and_restores_train_mode_and_rng(monkeypatch):
    seen = []

    def fake_evaluate(self, model, test_set, cfg, device, progress=True):
        seen.append(model.training)
        torch.rand(10)  # evaluation may draw random numbers: training must not notice
        return types.SimpleNamespace(metrics={"mAP": 50.0, "rank1": 60.0, "mINP": 10.0})

    monkeypatch.setattr(ReIDEvaluator, "evaluate_model", fake_evaluate)
    hook = EvalHook(get_cfg(), [types.SimpleNamespace(name="Tiny")], period=2, device=torch.device("cpu"))
    loop = loop_with([hook], max_iter=4)
    loop.run()
    assert seen == [False]  # at iteration 2 only, in eval mode; iteration 4 is the final evaluation's
    assert hook.history == [{"iteration": 2, "dataset": "Tiny", "mAP": 50.0, "rank1": 60.0, "mINP": 10.0}]
    assert loop.pending_scalars["eval/Tiny/mAP"] == 50.0
    assert loop.task.model.training and loop.task.trained == 4  # the loop calls task.train() every step

    torch.manual_seed(0)
    with_eval = loop_with([EvalHook(get_cfg(), [types.SimpleNamespace(name="T")], 1, torch.device("cpu"))])
    with_eval.run()
    torch.manual_seed(0)
    without = loop_with([])
    without.run()  # the dropout masks (global generator) are the same with and without evaluation
    assert torch.equal(with_eval.task.model[0].weight, without.task.model[0].weight)


def test_other_ranks_do_not_evaluate(monkeypatch):
    monkeypatch.setattr(ReIDEvaluator, "evaluate_model", lambda *a, **k: pytest.fail("rank 1 evaluated"))
    loop_with([EvalHook(get_cfg(), [], 1, torch.device("cpu"), is_main=False)]).run()


def test_throughput_reaches_metrics_json_without_touching_the_gate_payload(tmp_path):
    loop = loop_with([ThroughputHook(images_per_iter=16, warmup=1)], max_iter=5)
    loop.run()
    assert loop.summary["train_images_per_second"] > 0
    run = RunDirectory(str(tmp_path)).start(get_cfg(), "test")
    run.record(loop.summary)
    run.record({"mAP": -1.0})  # never overrides an evaluation metric
    payload = json.loads(open(run.finish({"mAP": 42.0}), encoding="utf-8").read())
    assert payload["mAP"] == 42.0 and payload["train_images_per_second"] == loop.summary["train_images_per_second"]
    assert payload["accepted"] is True and payload["gates"] == []


def test_autocast_selection():
    assert torch.is_autocast_enabled("cpu") is False
    with autocast(torch.device("cpu"), amp=False, bf16_cpu=True):
        assert torch.is_autocast_enabled("cpu")
        assert torch.mm(torch.ones(2, 2), torch.ones(2, 2)).dtype == torch.bfloat16
    with autocast(torch.device("cpu"), amp=True, bf16_cpu=False):  # fp16 AMP is CUDA only
        assert not torch.is_autocast_enabled("cpu")


def test_grad_clip_from_config():
    cfg = get_cfg()
    assert build_grad_clip(cfg) is None
    cfg.merge_from_list(["SOLVER.CLIP_GRADIENTS.ENABLED", "True", "SOLVER.CLIP_GRADIENTS.CLIP_VALUE", "0.5"])
    param = nn.Parameter(torch.zeros(4))
    param.grad = torch.full((4,), 10.0)
    build_grad_clip(cfg)([param])
    assert param.grad.norm().item() == pytest.approx(0.5, rel=1e-4)
    cfg.SOLVER.CLIP_GRADIENTS.CLIP_TYPE = "other"
    with pytest.raises(ConfigError, match="CLIP_TYPE"):
        build_grad_clip(cfg)


def test_fault_hook_raises_on_its_rank_only():
    loop_with([RaiseAtIterationHook(2, rank=1)]).run()
    with pytest.raises(RuntimeError, match="injected fault on rank 0 at iteration 2"):
        loop_with([RaiseAtIterationHook(2, rank=0)]).run()


def test_single_process_context_and_gradient_buckets():
    ctx = DistContext()
    assert ctx.is_main and not ctx.enabled
    assert ctx.broadcast_object({"a": 1}) == {"a": 1}
    assert ctx.mean_scalars({"loss": 2.0}, torch.device("cpu")) == {"loss": 2.0}
    grads = [torch.zeros(5 * 2**20) for _ in range(3)] + [torch.zeros(3, dtype=torch.float64)]
    # 20 MiB each: a bucket closes once it holds 32 MiB or more; float64 gradients go to their own bucket
    assert [[g.dtype for g in b] for b in _buckets(grads)] == [[torch.float32] * 2, [torch.float32], [torch.float64]]


class Unreadable(torch.utils.data.Dataset):
    def __len__(self):
        return 2

    def __getitem__(self, index):
        raise DataError(f"cannot read image /data/{index}.jpg: truncated file")


def test_an_error_raised_in_a_loader_worker_is_reported_on_one_line(capsys):
    loader = torch.utils.data.DataLoader(Unreadable(), num_workers=1)
    with pytest.raises(DataError) as info:
        next(iter(loader))
    assert "Caught DataError" in str(info.value)  # torch's wrapper, with the worker's traceback
    assert error_message(info.value) == "cannot read image /data/0.jpg: truncated file"

    def main():
        next(iter(torch.utils.data.DataLoader(Unreadable(), num_workers=1)))

    assert run_tool(main) == 2
    assert capsys.readouterr().err.strip() == "error: cannot read image /data/0.jpg: truncated file"
    assert error_message(ConfigError("plain message")) == "plain message"
