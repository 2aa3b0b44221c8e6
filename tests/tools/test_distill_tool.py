"""tools/distill.py end to end on a tiny synthetic benchmark: a teacher trained on demand, student and teacher
metrics, gates naming the teacher, gallery-compatible cross-model metrics, a missing teacher, resume."""

from __future__ import annotations

import json
import os
import runpy
import subprocess
import sys

import pytest
import torch

from compressreid.checkpoint import load_checkpoint
from compressreid.cli import run_tool
from compressreid.config import dump_config, get_cfg, load_config
from compressreid.distill.sources import TeacherSource
from compressreid.distill.train import ADAPTERS_FILE, train_missing_teachers
from compressreid.errors import CheckpointError
from compressreid.modeling import build_model

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TOOL = os.path.join(REPO, "tools", "distill.py")
CONFIG = os.path.join(REPO, "configs", "synthetic", "distill_r18.yml")
GALLERY_COMPATIBLE = os.path.join(REPO, "configs", "synthetic", "distill_r18_gallery_compatible.yml")

DATA = [
    "DATASETS.SYNTHETIC.NUM_TRAIN_IDS", "8", "DATASETS.SYNTHETIC.NUM_TEST_IDS", "6",
    "DATASETS.SYNTHETIC.NUM_DISTRACTORS", "4", "DATASETS.SYNTHETIC.SIZE", "[64, 32]",
    "INPUT.SIZE_TRAIN", "[32, 16]", "INPUT.SIZE_TEST", "[32, 16]", "SOLVER.IMS_PER_BATCH", "16",
    "SOLVER.MAX_EPOCH", "1", "SOLVER.ITERS_PER_EPOCH", "2", "SOLVER.WARMUP_ITERS", "1", "SOLVER.CHECKPOINT_PERIOD", "1",
    "DATALOADER.NUM_WORKERS", "0", "TEST.IMS_PER_BATCH", "64", "TEST.ROC.ENABLED", "False",
    "TEST.WORST_QUERIES", "0", "MODEL.DEVICE", "cpu",
]
STUDENT = ["MODEL.BACKBONE.WIDTH", "0.125", "MODEL.BACKBONE.FEAT_DIM", "64"]
TEACHER_DIM = 128  # ResNet-18 at width 0.25


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    """A folder with a tiny teacher config whose checkpoint does not exist yet."""
    work = tmp_path_factory.mktemp("distill")
    cfg = get_cfg()
    cfg.merge_from_file(os.path.join(REPO, "configs", "synthetic", "bot_r18.yml"))
    cfg.merge_from_list([*DATA, "MODEL.BACKBONE.WIDTH", "0.25", "MODEL.BACKBONE.FEAT_DIM", str(TEACHER_DIM),
                         "DATASETS.ROOT", str(work / "datasets"), "OUTPUT_DIR", str(work / "teacher")])
    dump_config(cfg, str(work / "teacher.yaml"))
    return work


def common(work, out, *extra):
    """Tiny data and student, the teacher by its run folder, then ``extra`` overrides (later keys win)."""
    return [*DATA, *STUDENT, "DATASETS.ROOT", str(work / "datasets"), "OUTPUT_DIR", str(out),
            "DISTILL.TEACHERS.CONFIGS", f'("{work / "teacher"}",)', "DISTILL.TEACHERS.WEIGHTS", "()", *extra]


def run_subprocess(*args, cwd):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, TOOL, *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=600)


def run_in_process(monkeypatch, *args):
    main = runpy.run_path(TOOL)["main"]
    monkeypatch.setattr(sys, "argv", ["distill.py", *args])
    return run_tool(main)


def read(path):
    return json.loads(path.read_text())


@pytest.fixture(scope="module")
def distilled(work):
    """The default recipe (no --config-file) shrunk by overrides: it trains the missing teacher first."""
    out = work / "student"
    return out, run_subprocess(*default_recipe_args(work, out), cwd=str(work))


def default_recipe_args(work, out):
    teacher = ["DISTILL.TEACHERS.CONFIGS", f'("{work / "teacher.yaml"}",)',
               "DISTILL.TEACHERS.WEIGHTS", f'("{work / "teacher" / "model_final.pth"}",)']
    # the default's losses plus FeatureMapDistill, whose adapters must be saved beside the student
    losses = ["DISTILL.LOSSES.NAME", '("LogitKD", "ListwiseRanking", "FeatureMapDistill")']
    return common(work, out, *teacher, *losses, "TEST.GATES", '["mAP >= 0.01 * teacher"]')


def test_default_recipe_trains_the_missing_teacher_into_a_complete_run(work, distilled):
    _, result = distilled
    assert result.returncode == 0, result.stderr[-3000:]
    assert "running the default recipe" in result.stderr and "TRAINING THE TEACHER FIRST" in result.stderr
    folder = work / "teacher"
    assert read(folder / "status.json")["status"] == "accepted"
    assert (folder / "model_final.pth").is_file() and (folder / "config.yaml").is_file()
    assert read(folder / "metrics.json")["mAP"] > 0
    source = TeacherSource("teacher.yaml", str(work / "teacher.yaml"), str(folder / "model_final.pth"))
    assert train_missing_teachers([source], progress=False) == []  # present now: nothing to train
    elsewhere = TeacherSource("teacher.yaml", str(work / "teacher.yaml"), str(work / "elsewhere.pth"))
    with pytest.raises(CheckpointError, match="would write"):  # training cannot provide a checkpoint elsewhere
        train_missing_teachers([elsewhere], progress=False)


def test_distill_reports_student_and_teacher_and_passes_its_gate(distilled):
    out, result = distilled
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = read(out / "metrics.json")
    teacher = read(out.parent / "teacher" / "metrics.json")
    assert metrics["accepted"] is True and read(out / "status.json")["status"] == "accepted"
    assert 0 < metrics["mAP"] <= 100 and "rank1" in metrics and "mINP" in metrics
    # the teacher evaluated in the distillation run scores exactly what its own run measured
    assert metrics["teacher"]["mAP"] == pytest.approx(teacher["mAP"], abs=1e-6)
    gate = metrics["gates"][0]
    assert gate["reference"] == "teacher" and gate["reference_value"] == pytest.approx(teacher["mAP"], abs=1e-6)
    assert "cross_model" not in metrics
    assert "teacher on Synthetic: mAP" in result.stderr and "student on Synthetic: mAP" in result.stderr
    log = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert {"distill/LogitKD", "distill/ListwiseRanking", "distill/FeatureMapDistill", "CrossEntropyLoss"} <= set(log[-1])


def test_saved_student_loads_into_a_plain_model(distilled):
    out, result = distilled
    assert result.returncode == 0, result.stderr[-3000:]
    model = build_model(load_config(str(out / "config.yaml")))
    report = load_checkpoint(model, str(out / "model_final.pth"))
    assert not report.missing and not report.unexpected
    assert model.embedding_dim == 64  # the student, not the teacher
    adapters = torch.load(out / ADAPTERS_FILE, weights_only=True)
    assert any(".adapters." in key for key in adapters["criterion"])  # the FeatureMapDistill 1x1 conv + BN


def test_resume_of_a_finished_run_completes(distilled, monkeypatch, caplog):
    out, result = distilled
    assert result.returncode == 0, result.stderr[-3000:]
    caplog.set_level("INFO")
    code = run_in_process(monkeypatch, "--resume", *default_recipe_args(out.parent, out))
    assert code == 0
    assert "resumed from" in caplog.text and "at iteration 2 of 2" in caplog.text
    assert read(out / "status.json")["status"] == "accepted"


def test_gallery_compatible_reports_cross_model_and_a_failed_gate_exits_3(work, distilled):
    out = work / "compatible"
    result = run_subprocess("--config-file", GALLERY_COMPATIBLE,
                            *common(work, out, "MODEL.HEADS.EMBEDDING_DIM", str(TEACHER_DIM),
                                    "TEST.GATES", '["mAP >= 0", "cross_mAP >= 2 * teacher"]'), cwd=str(work))
    assert result.returncode == 3, result.stderr[-3000:]
    assert "gate failed" in result.stderr
    metrics = read(out / "metrics.json")
    assert metrics["accepted"] is False and read(out / "status.json")["status"] == "rejected"
    passed = {g["rule"]: g["passed"] for g in metrics["gates"]}
    assert passed["mAP >= 0"] and not passed["cross_mAP >= 2 * teacher"]
    cross = metrics["cross_model"]
    assert set(cross) >= {"student_query_teacher_gallery", "student", "teacher", "dataset"}
    for key in ("student_query_teacher_gallery", "student", "teacher"):
        assert set(cross[key]) == {"mAP", "rank1", "mINP"}
    # the self-retrievals are the student's and teacher's own metrics; the gate compares with teacher->teacher
    assert cross["student"]["mAP"] == pytest.approx(metrics["mAP"])
    assert cross["teacher"]["mAP"] == pytest.approx(metrics["teacher"]["mAP"])
    assert metrics["cross_mAP"] == pytest.approx(cross["student_query_teacher_gallery"]["mAP"])
    assert metrics["gates"][1]["reference_value"] == pytest.approx(cross["teacher"]["mAP"])
    assert "cross-model Synthetic, student_query_teacher_gallery: mAP" in result.stderr


def test_missing_teacher_checkpoint_exits_2_before_anything_is_written(work, distilled, tmp_path, monkeypatch,
                                                                      capsys):
    out = tmp_path / "out"
    code = run_in_process(monkeypatch, "--config-file", CONFIG,
                          *common(work, out, "DISTILL.TEACHERS.WEIGHTS", f'("{tmp_path / "missing.pth"}",)'))
    assert code == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "teacher checkpoint not found" in errors[0] and "missing.pth" in errors[0]
    assert not out.exists()


@pytest.mark.parametrize("gates, words", [
    ('["mAP >= 0.9 * teachr"]', "names reference 'teachr'; available: teacher"),
    ('["cross_mAP >= 0.9 * teacher"]', "only gallery-compatible runs report"),
])
def test_bad_gate_rules_exit_2_before_training(work, distilled, tmp_path, monkeypatch, capsys, gates, words):
    out = tmp_path / "out"
    code = run_in_process(monkeypatch, "--config-file", CONFIG, *common(work, out, "TEST.GATES", gates))
    assert code == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and words in errors[0]
    assert not out.exists()
