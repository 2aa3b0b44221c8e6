"""tools/compress.py stopped by SIGTERM mid-way through a training stage: exit 143, the manifest and the stage say
'interrupted'; the same command again continues that stage from its last checkpoint (recorded in the manifest)
and ends with the weights of a pipeline that was never interrupted."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest
import torch

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TOOL = os.path.join(REPO, "tools", "compress.py")
MAX_ITER = 16  # 8 epochs of 2 iterations, a checkpoint every epoch

SHARED = [
    "DATASETS.SYNTHETIC.NUM_TRAIN_IDS", "8", "DATASETS.SYNTHETIC.NUM_TEST_IDS", "6",
    "DATASETS.SYNTHETIC.NUM_DISTRACTORS", "4", "DATASETS.SYNTHETIC.SIZE", "[64, 32]",
    "INPUT.SIZE_TRAIN", "[32, 16]", "INPUT.SIZE_TEST", "[32, 16]", "SOLVER.IMS_PER_BATCH", "16",
    "SOLVER.MAX_EPOCH", "8", "SOLVER.ITERS_PER_EPOCH", "2", "SOLVER.WARMUP_ITERS", "1", "SOLVER.CHECKPOINT_PERIOD", "1",
    "TEST.EVAL_PERIOD", "0", "TEST.ROC.ENABLED", "False", "TEST.WORST_QUERIES", "0", "TEST.IMS_PER_BATCH", "64",
    "DATALOADER.NUM_WORKERS", "0", "MODEL.DEVICE", "cpu",
]


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    work = tmp_path_factory.mktemp("resume_pipeline")
    (work / "teacher.yml").write_text(
        f"_BASE_: {REPO}/configs/synthetic/bot_r18.yml\nMODEL:\n  BACKBONE:\n    WIDTH: 0.125\n    FEAT_DIM: 64\n"
        "TEST:\n  GATES: ['mAP >= 0']\n")
    return work


def start(work, out):
    args = ["--skip-latency", "--config-file", os.path.join(REPO, "configs", "synthetic", "compress_r18.yml"),
            "PIPELINE.STAGES", '("teacher",)', "PIPELINE.CONFIGS", repr((str(work / "teacher.yml"),)),
            "OUTPUT_DIR", str(work / out), "DATASETS.ROOT", str(work / "datasets"), *SHARED]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.Popen([sys.executable, TOOL, *args], cwd=str(work), env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def manifest(folder):
    return json.loads((folder / "manifest.json").read_text())


def weights(folder):
    return torch.load(folder / "teacher" / "model_final.pth", map_location="cpu", weights_only=True)["model"]


def test_an_interrupted_stage_resumes_from_its_checkpoint_to_the_uninterrupted_weights(work):
    out = work / "interrupted"
    proc = start(work, out)
    checkpoint = out / "teacher" / "last_checkpoint.pth"
    deadline = time.monotonic() + 300
    while not checkpoint.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 143, stderr[-3000:]
    assert manifest(out)["status"] == "interrupted" and manifest(out)["stages"][0]["status"] == "interrupted"
    assert json.loads((out / "teacher" / "status.json").read_text())["status"] == "interrupted"
    killed_at = torch.load(checkpoint, weights_only=True)["iteration"]
    assert 0 < killed_at < MAX_ITER

    again = start(work, out)
    _, stderr = again.communicate(timeout=600)
    assert again.returncode == 0, stderr[-3000:]
    assert re.search(rf"resumed from \S+last_checkpoint.pth at iteration {killed_at} of {MAX_ITER}", stderr), stderr
    stage = manifest(out)["stages"][0]
    assert stage["status"] == "accepted" and stage["resumed"] is True and "resumed" in stage["reason"]

    uninterrupted = start(work, "uninterrupted")
    _, stderr = uninterrupted.communicate(timeout=600)
    assert uninterrupted.returncode == 0, stderr[-3000:]
    assert manifest(work / "uninterrupted")["stages"][0]["resumed"] is False
    expected, got = weights(work / "uninterrupted"), weights(out)
    assert expected.keys() == got.keys() and all(torch.equal(expected[k], got[k]) for k in expected)
