"""configs/synthetic/compress_r18.yml and demo.yml plan as documented: each stage pointed at the folder before it,
every gate valid at plan time."""

from __future__ import annotations

import os

import pytest

from compressreid.config import load_config
from compressreid.pipeline.runner import plan_pipeline, split_overrides

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIG = os.path.join(REPO, "configs", "synthetic", "compress_r18.yml")


def shipped(*opts):
    cfg = load_config(CONFIG)
    configs = tuple(os.path.join(REPO, c) for c in cfg.PIPELINE.CONFIGS)
    return load_config(CONFIG, ["PIPELINE.CONFIGS", repr(configs), *opts])


def test_teacher_and_distill_of_the_shipped_recipe_are_linked():
    cfg = shipped()
    assert list(cfg.PIPELINE.STAGES) == ["teacher", "distill", "prune", "quantize"]
    assert cfg.OUTPUT_DIR == "output/synthetic/compress_r18"
    two = load_config(CONFIG, ["PIPELINE.STAGES", '("teacher", "distill")',
                               "PIPELINE.CONFIGS", repr(tuple(cfg.PIPELINE.CONFIGS[:2])), "OUTPUT_DIR", "out"])
    teacher, distill = plan_pipeline(two, ["MODEL.DEVICE", "cpu"]).stages
    assert teacher.cfg.OUTPUT_DIR == os.path.join("out", "teacher") and teacher.cfg.MODEL.DEVICE == "cpu"
    assert list(distill.cfg.DISTILL.TEACHERS.CONFIGS) == [teacher.folder] and not distill.cfg.DISTILL.TEACHERS.WEIGHTS
    assert distill.cfg.MODEL.DEVICE == "cpu" and list(distill.cfg.TEST.GATES) == ["mAP >= 50", "mAP >= 0.8 * teacher"]


def test_every_stage_of_the_shipped_recipe_is_linked_to_the_one_before():
    cfg = shipped("OUTPUT_DIR", "out")
    if not all(os.path.isfile(c) for c in cfg.PIPELINE.CONFIGS):
        pytest.skip("the prune and quantize stage configs are not in this checkout yet")
    teacher, distill, prune, quantize = plan_pipeline(cfg).stages
    assert prune.cfg.PRUNE.SOURCE == distill.folder and quantize.cfg.QUANT.SOURCE == prune.folder
    assert quantize.stage.onnx == "student_int8.onnx"


def test_overrides_split_between_the_pipeline_and_every_stage():
    own, shared = split_overrides(["OUTPUT_DIR", "o", "SOLVER.MAX_EPOCH", "1", "PIPELINE.STAGES", "('teacher',)"])
    assert own == ["OUTPUT_DIR", "o", "PIPELINE.STAGES", "('teacher',)"] and shared == ["SOLVER.MAX_EPOCH", "1"]


def test_the_demo_plans_with_its_baseline_as_a_reference_of_the_later_stages():
    demo = os.path.join(REPO, "configs", "synthetic", "demo.yml")
    cfg = load_config(demo)
    configs = tuple(os.path.join(REPO, c) for c in cfg.PIPELINE.CONFIGS)
    plan = plan_pipeline(load_config(demo, ["PIPELINE.CONFIGS", repr(configs), "OUTPUT_DIR", "out"]), [])
    baseline, teacher, distill, prune, quantize = plan.stages
    assert baseline.name == "baseline" and teacher.name == "teacher"
    assert baseline.cfg.MODEL.BACKBONE.WIDTH == distill.cfg.MODEL.BACKBONE.WIDTH == 0.25
    assert baseline.cfg.SOLVER.MAX_EPOCH == distill.cfg.SOLVER.MAX_EPOCH
    assert list(distill.cfg.DISTILL.TEACHERS.CONFIGS) == [teacher.folder]
    assert "mAP >= baseline + 5" in teacher.cfg.TEST.GATES and "mAP >= baseline + 3" in distill.cfg.TEST.GATES
    assert list(quantize.cfg.QUANT.TARGETS) == ["ort_portable", "boxmot"]
