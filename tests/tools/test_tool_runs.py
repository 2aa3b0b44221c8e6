"""End-to-end smoke runs of the tools on a tiny synthetic benchmark: exit codes and what each leaves behind."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

TINY = [
    "DATASETS.SYNTHETIC.NUM_TRAIN_IDS", "8", "DATASETS.SYNTHETIC.NUM_TEST_IDS", "6",
    "DATASETS.SYNTHETIC.NUM_DISTRACTORS", "4", "DATASETS.SYNTHETIC.SIZE", "[64, 32]",
    "INPUT.SIZE_TRAIN", "[32, 16]", "INPUT.SIZE_TEST", "[32, 16]",
    "MODEL.BACKBONE.DEPTH", "18x", "MODEL.BACKBONE.FEAT_DIM", "512",
    "SOLVER.IMS_PER_BATCH", "16", "SOLVER.MAX_EPOCH", "1", "SOLVER.ITERS_PER_EPOCH", "2",
    "SOLVER.WARMUP_ITERS", "1", "DATALOADER.NUM_WORKERS", "0", "TEST.IMS_PER_BATCH", "64", "MODEL.DEVICE", "cpu",
]


def run_tool(tool: str, *args: str, cwd: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, os.path.join(REPO, "tools", tool), *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One tiny training run shared by the tests of this module."""
    work = tmp_path_factory.mktemp("tools")
    out = work / "train"
    result = run_tool("train_teacher.py", "--config-file", os.path.join(REPO, "configs/synthetic/bot_r18.yml"),
                      *TINY, "DATASETS.ROOT", str(work / "datasets"), "OUTPUT_DIR", str(out), cwd=str(work))
    return work, out, result


def test_train_teacher_writes_a_complete_run(trained):
    work, out, result = trained
    assert result.returncode == 0, result.stderr[-2000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["accepted"] is True and metrics["dataset"] == "Synthetic"
    for key in ("mAP", "rank1", "rank5", "rank10", "mINP", "TPR@FPR=1e-02", "num_query", "num_gallery"):
        assert key in metrics
    assert 0.0 <= metrics["mAP"] <= 100.0
    assert json.loads((out / "status.json").read_text())["status"] == "accepted"
    assert (out / "model_final.pth").is_file() and (out / "config.yaml").is_file()
    for plot in ("Synthetic_roc.png", "Synthetic_distances.png", "Synthetic_worst_queries.png"):
        assert (out / "plots" / plot).stat().st_size > 1000


def test_evaluate_reproduces_training_metrics_and_gates(trained):
    work, out, _ = trained
    common = ["--config-file", str(out / "config.yaml"), "MODEL.WEIGHTS", str(out / "model_final.pth")]
    ok = run_tool("evaluate.py", *common, "OUTPUT_DIR", str(work / "eval"), "TEST.GATES", '["mAP >= 0"]',
                  cwd=str(work))
    assert ok.returncode == 0, ok.stderr[-2000:]
    evaluated = json.loads((work / "eval" / "metrics.json").read_text())
    assert evaluated["mAP"] == pytest.approx(json.loads((out / "metrics.json").read_text())["mAP"], abs=1e-6)

    rejected = run_tool("evaluate.py", *common, "OUTPUT_DIR", str(work / "gate"), "TEST.GATES",
                        '["mAP >= reference + 1"]', "TEST.GATE_REFERENCE", str(out / "metrics.json"), cwd=str(work))
    assert rejected.returncode == 3, rejected.stderr[-2000:]
    metrics = json.loads((work / "gate" / "metrics.json").read_text())
    assert metrics["accepted"] is False and metrics["gates"][0]["passed"] is False
    assert json.loads((work / "gate" / "status.json").read_text())["status"] == "rejected"


@pytest.mark.parametrize(
    "overrides, words",
    [
        (["SOLVER.BASE_LRR", "0.1"], "did you mean 'SOLVER.BASE_LR'"),
        (["DATASETS.NAMES", '("Market1501",)', "DATASETS.TESTS", '("Market1501",)'], "expected layout"),
        (["TEST.GATES", '["mAP >> 3"]'], "gate rule"),
        (["MODEL.WEIGHTS", "/nonexistent/model.pth"], "checkpoint not found"),
    ],
)
def test_bad_input_exits_2_with_one_line_and_no_metrics(tmp_path, overrides, words):
    result = run_tool("evaluate.py", "--config-file", os.path.join(REPO, "configs/synthetic/bot_r18.yml"), *TINY,
                      "DATASETS.ROOT", str(tmp_path / "none"), "MODEL.WEIGHTS", str(tmp_path / "missing.pth"),
                      "OUTPUT_DIR", str(tmp_path / "out"), *overrides, cwd=str(tmp_path))
    assert result.returncode == 2, result.stderr[-2000:]
    error_lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(error_lines) == 1 and words in error_lines[0]
    assert not (tmp_path / "out" / "metrics.json").exists()
