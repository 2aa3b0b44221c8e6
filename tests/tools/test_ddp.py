"""Multi-process training with torchrun (2 CPU processes, gloo): the same trajectory as one process, and a dying
rank stops the whole job instead of hanging it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Dict

import pytest
import torch

from compressreid.config import get_cfg
from compressreid.data.build import load_train_data
from compressreid.engine.device import seed_everything
from compressreid.engine.optim import build_optimizer
from compressreid.engine.run_dir import RunDirectory
from compressreid.engine.supervised import SupervisedTask
from compressreid.engine.trainer import fit
from compressreid.modeling import build_model
from compressreid.modeling.losses import build_criterion

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TOOL = os.path.join(REPO, "tools", "train_teacher.py")
CONFIG = os.path.join(REPO, "configs", "synthetic", "bot_r18.yml")
RANKS = 2

TINY = [
    "DATASETS.SYNTHETIC.NUM_TRAIN_IDS", "8", "DATASETS.SYNTHETIC.NUM_TEST_IDS", "6",
    "DATASETS.SYNTHETIC.NUM_DISTRACTORS", "4", "DATASETS.SYNTHETIC.SIZE", "[64, 32]",
    "INPUT.SIZE_TRAIN", "[32, 16]", "INPUT.SIZE_TEST", "[32, 16]", "MODEL.BACKBONE.WIDTH", "0.125",
    "MODEL.BACKBONE.FEAT_DIM", "64", "SOLVER.IMS_PER_BATCH", "16", "SOLVER.MAX_EPOCH", "4",
    "SOLVER.ITERS_PER_EPOCH", "2", "SOLVER.WARMUP_ITERS", "1", "SOLVER.BASE_LR", "0.003",
    "SOLVER.CHECKPOINT_PERIOD", "0", "TEST.EVAL_PERIOD", "0", "TEST.ROC.ENABLED", "False", "TEST.WORST_QUERIES", "0",
    "TEST.IMS_PER_BATCH", "64", "MODEL.DEVICE", "cpu", "DATALOADER.NUM_WORKERS", "0",
]


def overrides(work, out):
    return [*TINY, "DATASETS.ROOT", str(work / "datasets"), "OUTPUT_DIR", str(work / out)]


def torchrun(work, out, env_extra=None):
    env = dict(os.environ, OMP_NUM_THREADS="1", **(env_extra or {}))
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={RANKS}", TOOL,
               "--dist-timeout", "60", "--config-file", CONFIG, *overrides(work, out)]
    # the timeout only guards the test run against a hang; the job is expected to end long before
    return subprocess.run(command, cwd=str(work), env=env, capture_output=True, text=True, timeout=300)


class RankSplitTask:
    """One process computing what RANKS processes compute together: the global batch is cut into the ranks'
    contiguous slices, each goes through the model on its own (BatchNorm statistics and triplet mining per
    slice, as per rank), and the losses are averaged (as gradients are averaged across ranks)."""

    def __init__(self, task: SupervisedTask, parts: int):
        self.task, self.model, self.parts = task, task.model, parts

    def training_step(self, batch: Dict[str, object]) -> Dict[str, torch.Tensor]:
        size = len(batch["targets"]) // self.parts
        slices = [{k: v[i * size:(i + 1) * size] if torch.is_tensor(v) else v for k, v in batch.items()}
                  for i in range(self.parts)]
        losses = [self.task.training_step(part) for part in slices]
        return {name: sum(part[name] for part in losses) / self.parts for name in losses[0]}


def train_log(out):
    with open(os.path.join(out, "train_log.jsonl"), encoding="utf-8") as handle:
        return [json.loads(line) for line in handle]


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    return tmp_path_factory.mktemp("ddp")


def test_two_processes_follow_the_one_process_trajectory(work):
    cfg = get_cfg()
    cfg.merge_from_file(CONFIG)
    cfg.merge_from_list(overrides(work, "one"))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        seed_everything(cfg.SEED)
        data = load_train_data(cfg)  # renders the benchmark once for both runs
        model = build_model(cfg, num_classes=data.num_classes)
        task = RankSplitTask(SupervisedTask(model, build_criterion(cfg), torch.device("cpu")), RANKS)
        fit(cfg, RunDirectory(cfg.OUTPUT_DIR).start(cfg, "test"), task, build_optimizer(cfg, model), data,
            progress=False)
    finally:
        torch.set_num_threads(threads)

    result = torchrun(work, "two")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "on cpu x 2" in result.stderr  # really two ranks
    one, two = train_log(work / "one"), train_log(work / "two")
    assert [r["iteration"] for r in two] == list(range(1, 9))
    # Rank 0 logs the losses averaged over ranks, summed in another order than the emulation's: they agree to
    # float32 rounding (2 ulps, relative 2.4e-7; measured <= 1e-7 here). Gradients of two ranks are averaged with
    # one addition either way, so the weights, as the README states, are the same bit for bit.
    for a, b in zip(one, two):
        assert b["total"] == pytest.approx(a["total"], rel=2.4e-7, abs=0), a["iteration"]
        assert b["lr"] == pytest.approx(a["lr"], rel=1e-9)
    assert two[-1]["total"] != pytest.approx(two[0]["total"], abs=1e-3)  # it trained: a real trajectory
    expected = dict(model.named_parameters())
    got = torch.load(work / "two" / "model_final.pth", weights_only=True)["model"]
    for name, param in expected.items():
        assert torch.equal(param.detach(), got[name]), name
    metrics = json.loads((work / "two" / "metrics.json").read_text())
    assert metrics["accepted"] is True and metrics["train_images_per_second"] > 0
    assert not (work / "two" / "status.json").read_text().count("failed")


def test_a_rank_that_dies_stops_the_whole_job(work):
    result = torchrun(work, "fault", {"COMPRESSREID_FAULT_AT": "1:3"})  # rank 1 raises after iteration 3
    assert result.returncode != 0
    assert "injected fault on rank 1 at iteration 3" in result.stderr
    assert not (work / "fault" / "metrics.json").exists()
