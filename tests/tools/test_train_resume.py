"""tools/train_teacher.py --resume: a run killed with SIGKILL and resumed ends with the uninterrupted run's weights."""

from __future__ import annotations

import json
import os
import runpy
import re
import signal
import subprocess
import sys
import time

import pytest
import torch

from compressreid.cli import run_tool
from compressreid.config import get_cfg
from compressreid.engine.run_dir import RunDirectory
from compressreid.engine.supervised import train_supervised

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TOOL = os.path.join(REPO, "tools", "train_teacher.py")
CONFIG = os.path.join(REPO, "configs", "synthetic", "bot_r18.yml")
MAX_ITER = 16  # 8 epochs of 2 iterations, a checkpoint every epoch, an evaluation every 2 epochs

TINY = [
    "DATASETS.SYNTHETIC.NUM_TRAIN_IDS", "8", "DATASETS.SYNTHETIC.NUM_TEST_IDS", "6",
    "DATASETS.SYNTHETIC.NUM_DISTRACTORS", "4", "DATASETS.SYNTHETIC.SIZE", "[64, 32]",
    "INPUT.SIZE_TRAIN", "[32, 16]", "INPUT.SIZE_TEST", "[32, 16]", "MODEL.BACKBONE.WIDTH", "0.125",
    "MODEL.BACKBONE.FEAT_DIM", "64", "SOLVER.IMS_PER_BATCH", "16", "SOLVER.MAX_EPOCH", "8",
    "SOLVER.ITERS_PER_EPOCH", "2", "SOLVER.WARMUP_ITERS", "2", "SOLVER.CHECKPOINT_PERIOD", "1",
    "TEST.EVAL_PERIOD", "2", "TEST.ROC.ENABLED", "False", "TEST.WORST_QUERIES", "0", "TEST.IMS_PER_BATCH", "64",
    "MODEL.DEVICE", "cpu",
]


def overrides(root, out, workers):
    return [*TINY, "DATASETS.ROOT", str(root), "OUTPUT_DIR", str(out), "DATALOADER.NUM_WORKERS", str(workers)]


def start_tool(*args, cwd):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.Popen([sys.executable, TOOL, *args], cwd=cwd, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def final_weights(out):
    return torch.load(os.path.join(out, "model_final.pth"), map_location="cpu", weights_only=True)["model"]


def losses(out):
    with open(os.path.join(out, "train_log.jsonl"), encoding="utf-8") as handle:
        return [json.loads(line) for line in handle]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The uninterrupted run, trained in this process with one thread (as the tool runs below) and 0 workers."""
    work = tmp_path_factory.mktemp("resume")
    cfg = get_cfg()
    cfg.merge_from_file(CONFIG)
    cfg.merge_from_list(overrides(work / "datasets", work / "reference", 0))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        train_supervised(cfg, RunDirectory(cfg.OUTPUT_DIR).start(cfg, "test"), progress=False)
    finally:
        torch.set_num_threads(threads)
    return work


def test_sigkill_then_resume_ends_with_the_uninterrupted_weights(reference):
    work, out = reference, reference / "interrupted"
    # killed while reading with 2 workers, resumed with 0: augmentation is seeded per image, so both must agree
    proc = start_tool("--config-file", CONFIG, *overrides(work / "datasets", out, 2), cwd=str(work))
    checkpoint = out / "last_checkpoint.pth"
    deadline = time.monotonic() + 300
    while not checkpoint.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL, stderr[-2000:]
    killed_at = torch.load(checkpoint, weights_only=True)["iteration"]
    assert 0 < killed_at < MAX_ITER  # it really was interrupted mid-training

    resumed = start_tool("--resume", "--config-file", CONFIG, *overrides(work / "datasets", out, 0), cwd=str(work))
    _, stderr = resumed.communicate(timeout=600)
    assert resumed.returncode == 0, stderr[-3000:]
    assert f"resumed from {checkpoint} at iteration {killed_at}" in stderr

    # bit for bit, as the README states (max difference 0.0): the same operations on the same data in the same order
    expected, got = final_weights(work / "reference"), final_weights(out)
    assert expected.keys() == got.keys()
    for key in expected:
        assert torch.equal(expected[key], got[key]), key
    # the per-iteration log reads as one run: lines past the checkpoint were dropped before continuing
    assert [r["iteration"] for r in losses(out)] == list(range(1, MAX_ITER + 1))
    assert [r["total"] for r in losses(out)] == [r["total"] for r in losses(work / "reference")]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["accepted"] is True and metrics["train_images_per_second"] > 0
    assert "iter 8 Synthetic: mAP" in stderr  # periodic evaluation ran after the resume point


def run_in_process(monkeypatch, *args):
    main = runpy.run_path(TOOL)["main"]
    monkeypatch.setattr(sys, "argv", ["train_teacher.py", *args])
    return run_tool(main)


def test_resume_without_a_checkpoint_exits_2(reference, tmp_path, monkeypatch, capsys):
    code = run_in_process(monkeypatch, "--resume", "--config-file", CONFIG,
                          *overrides(reference / "datasets", tmp_path / "fresh", 0))
    assert code == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "no last_checkpoint.pth" in errors[0]


def test_resume_with_a_changed_config_is_refused(reference, monkeypatch, capsys):
    # the reference run's OUTPUT_DIR holds its final checkpoint; a new learning rate would change the result
    folder = reference / "reference"
    before = {name: (folder / name).read_text() for name in ("config.yaml", "status.json")}
    args = ["--resume", "--config-file", CONFIG, *overrides(reference / "datasets", folder, 0)]
    code = run_in_process(monkeypatch, *args, "SOLVER.BASE_LR", "0.123")
    assert code == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and re.search(r"SOLVER.BASE_LR: [0-9.e-]+ -> 0.123", errors[0])
    # refused before the run folder is touched: its config and status stay the original run's
    assert {name: (folder / name).read_text() for name in before} == before
