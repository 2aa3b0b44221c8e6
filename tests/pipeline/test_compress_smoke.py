"""tools/compress.py end to end with the real teacher and distill stages on a tiny synthetic benchmark: the chain,
the measurements, the report, and a re-run that reuses both stages."""

from __future__ import annotations

import json
import os
import runpy
import sys

import pytest

from compressreid.cli import run_tool
from compressreid.config import load_config

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TOOL = os.path.join(REPO, "tools", "compress.py")

# Shared by both stages (KEY VALUE on the command line applies to every stage config).
SHARED = [
    "DATASETS.SYNTHETIC.NUM_TRAIN_IDS", "8", "DATASETS.SYNTHETIC.NUM_TEST_IDS", "6",
    "DATASETS.SYNTHETIC.NUM_DISTRACTORS", "4", "DATASETS.SYNTHETIC.SIZE", "[64, 32]",
    "INPUT.SIZE_TRAIN", "[32, 16]", "INPUT.SIZE_TEST", "[32, 16]", "SOLVER.IMS_PER_BATCH", "16",
    "SOLVER.MAX_EPOCH", "1", "SOLVER.ITERS_PER_EPOCH", "2", "SOLVER.WARMUP_ITERS", "1", "SOLVER.CHECKPOINT_PERIOD", "1",
    "DATALOADER.NUM_WORKERS", "0", "TEST.IMS_PER_BATCH", "64", "TEST.WORST_QUERIES", "2", "MODEL.DEVICE", "cpu",
    "QUANT.BENCHMARK.ITERS", "3", "QUANT.BENCHMARK.THREADS", "1",
    "QUANT.BENCHMARK.WHEN_SLOWER", "warn",  # what ships must not depend on how this machine times tiny models
]


def call_tool(monkeypatch, *args):
    main = runpy.run_path(TOOL)["main"]
    monkeypatch.setattr(sys, "argv", ["compress.py", *args])
    return run_tool(main)


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    """Tiny stage configs: a width-0.25 ResNet-18 teacher, a width-0.125 student distilled from it."""
    work = tmp_path_factory.mktemp("compress")
    synthetic = os.path.join(REPO, "configs", "synthetic")
    (work / "teacher.yml").write_text(
        f"_BASE_: {synthetic}/bot_r18.yml\nMODEL:\n  BACKBONE:\n    WIDTH: 0.25\n    FEAT_DIM: 128\n"
        "TEST:\n  GATES: ['mAP >= 0']\n")
    (work / "distill.yml").write_text(
        f"_BASE_: {synthetic}/distill_r18.yml\nMODEL:\n  BACKBONE:\n    WIDTH: 0.125\n    FEAT_DIM: 64\n"
        "TEST:\n  GATES: ['mAP >= 0.01 * teacher']\n")
    return work


def args(work):
    return ["--config-file", os.path.join(REPO, "configs", "synthetic", "compress_r18.yml"),
            "PIPELINE.STAGES", '("teacher", "distill")',
            "PIPELINE.CONFIGS", repr((str(work / "teacher.yml"), str(work / "distill.yml"))),
            "OUTPUT_DIR", str(work / "out"), "DATASETS.ROOT", str(work / "datasets"), *SHARED]


@pytest.fixture(scope="module")
def first_run(work):
    monkeypatch = pytest.MonkeyPatch()
    try:
        code = call_tool(monkeypatch, *args(work))
    finally:
        monkeypatch.undo()
    return code, json.loads((work / "out" / "manifest.json").read_text())


def test_teacher_then_distill_chain_is_recorded_and_measured(work, first_run, capsys):
    code, manifest = first_run
    assert code == 0 and manifest["status"] == "accepted"
    teacher, student = manifest["stages"]
    assert (teacher["status"], student["status"]) == ("accepted", "accepted")
    # the distill stage was pointed at the teacher stage's folder and read its checkpoint
    derived = load_config(str(work / "out" / "distill" / "config.yaml"))
    assert list(derived.DISTILL.TEACHERS.CONFIGS) == [teacher["folder"]] and not derived.DISTILL.TEACHERS.WEIGHTS
    teacher_model = os.path.join(teacher["folder"], "model_final.pth")
    assert student["inputs"] == {teacher_model: teacher["outputs"]["model_final.pth"]}
    metrics = json.loads((work / "out" / "distill" / "metrics.json").read_text())
    assert metrics["teacher"]["mAP"] == pytest.approx(teacher["metrics"]["mAP"], abs=1e-6)  # same evaluator, same sets
    assert student["gates"][0]["reference"] == "teacher" and student["gates"][0]["passed"]
    t, s = teacher["measurements"], student["measurements"]
    assert 0 < s["params"] < t["params"] and 0 < s["macs"] < t["macs"]
    assert t["latency_ms"] > 0 and s["latency_ms"] > 0 and s["size_bytes"] > 0
    for stage in ("teacher", "distill"):
        curves = json.loads((work / "out" / stage / "plots" / "Synthetic_curves.json").read_text())
        assert curves["roc"]["tpr"] and curves["distances"]["pos"]
    assert manifest["final_artifact"] == os.path.join(student["folder"], "model_final.pth")


def test_report_shows_both_stages_with_embedded_figures(work, first_run):
    code, manifest = first_run
    assert code == 0
    report = (work / "out" / "report.md").read_text()
    for stage in manifest["stages"]:
        mAP = f"{stage['metrics']['mAP']:.2f}"
        assert f"| {stage['index'] + 1} | {stage['name']} | accepted | {mAP} |" in report
    assert "(distill/plots/Synthetic_worst_queries.png)" in report
    page = (work / "out" / "report.html").read_text()
    assert page.count("src='data:image/png;base64,") == 4  # accuracy/latency, ROC, distances, worst queries


def test_rerun_of_the_same_command_reuses_both_stages(work, first_run, monkeypatch, caplog, capsys):
    code, manifest = first_run
    assert code == 0
    caplog.set_level("INFO")
    assert call_tool(monkeypatch, *args(work)) == 0
    again = json.loads((work / "out" / "manifest.json").read_text())
    assert [s["reused"] for s in again["stages"]] == [True, True]
    assert caplog.text.count("SKIPPED") == 2 and "RUNNING" not in caplog.text
    assert [s["measurements"] for s in again["stages"]] == [s["measurements"] for s in manifest["stages"]]
    out = capsys.readouterr().out
    assert f"report: {work / 'out' / 'report.md'}" in out and "model: " in out


def test_a_teacher_with_existing_weights_is_loaded_not_trained(work, first_run, monkeypatch):
    code, manifest = first_run
    assert code == 0
    weights = work / "out" / "teacher" / "model_final.pth"
    (work / "teacher_load.yml").write_text(f"_BASE_: {work / 'teacher.yml'}\nMODEL:\n  WEIGHTS: {weights}\n")
    opts = args(work)
    opts[opts.index("PIPELINE.CONFIGS") + 1] = repr((str(work / "teacher_load.yml"), str(work / "distill.yml")))
    opts[opts.index("OUTPUT_DIR") + 1] = str(work / "loaded")
    assert call_tool(monkeypatch, "--skip-latency", *opts) == 0
    loaded = json.loads((work / "loaded" / "manifest.json").read_text())
    teacher = loaded["stages"][0]
    folder = work / "loaded" / "teacher"
    assert (folder / "model_final.pth").read_bytes() == weights.read_bytes()  # the checkpoint, copied as is
    assert not (folder / "last_checkpoint.pth").exists()  # evaluated only, never trained
    assert teacher["inputs"] == {str(weights): manifest["stages"][0]["outputs"]["model_final.pth"]}
    assert teacher["metrics"]["mAP"] == pytest.approx(manifest["stages"][0]["metrics"]["mAP"], abs=1e-6)
    assert teacher["measurements"]["latency_ms"] is None and teacher["measurements"]["params"] > 0
    assert "n/a" in (work / "loaded" / "report.md").read_text()
