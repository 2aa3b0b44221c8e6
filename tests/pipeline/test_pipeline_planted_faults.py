"""Planted faults the whole chain must stop at the right stage, whatever the relative gates after it say: a teacher
that never learned (below its absolute floor), a NaN teacher, and an exported model that normalises its input twice
(every relative gate passes, because its FP32 reference is fed the same way; the built-in collapse check stops it).
"""

from __future__ import annotations

import json
import os
import runpy
import sys

import pytest
import torch

from compressreid.checkpoint import save_checkpoint
from compressreid.cli import run_tool
from compressreid.config import get_cfg
from compressreid.export.onnx_export import export_onnx
from compressreid.modeling import build_model

from tiny_models import warm_backbone_norms

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TOOL = os.path.join(REPO, "tools", "compress.py")
SYNTHETIC = os.path.join(REPO, "configs", "synthetic")
SIZE = (32, 16)
SHARED = [
    "DATASETS.SYNTHETIC.NUM_TRAIN_IDS", "8", "DATASETS.SYNTHETIC.NUM_TEST_IDS", "6",
    "DATASETS.SYNTHETIC.NUM_DISTRACTORS", "4", "DATASETS.SYNTHETIC.SIZE", "[64, 32]",
    "INPUT.SIZE_TRAIN", "[32, 16]", "INPUT.SIZE_TEST", "[32, 16]", "SOLVER.IMS_PER_BATCH", "16",
    "SOLVER.MAX_EPOCH", "1", "SOLVER.ITERS_PER_EPOCH", "2", "SOLVER.WARMUP_ITERS", "1",
    "DATALOADER.NUM_WORKERS", "0", "TEST.IMS_PER_BATCH", "64", "TEST.WORST_QUERIES", "0", "MODEL.DEVICE", "cpu",
    "MODEL.BACKBONE.WIDTH", "0.125", "MODEL.BACKBONE.FEAT_DIM", "64",
    "QUANT.BENCHMARK.ITERS", "1", "QUANT.BENCHMARK.THREADS", "1", "QUANT.BENCHMARK.BATCHES", "(1,)",
    "QUANT.CALIBRATION.NUM_IMAGES", "8", "QUANT.CALIBRATION.BATCH_SIZE", "4", "QUANT.FALLBACK.ENABLED", "False",
    "QUANT.BENCHMARK.WHEN_SLOWER", "warn",  # what ships must not depend on how this machine times tiny models
]


def call_tool(monkeypatch, *args):
    main = runpy.run_path(TOOL)["main"]
    monkeypatch.setattr(sys, "argv", ["compress.py", "--skip-latency", *args])
    return run_tool(main)


def tiny_model(seed: int = 0) -> torch.nn.Module:
    cfg = get_cfg()
    cfg.merge_from_file(os.path.join(SYNTHETIC, "bot_r18.yml"))
    cfg.merge_from_list(SHARED)
    torch.manual_seed(seed)
    return warm_backbone_norms(build_model(cfg, num_classes=0), SIZE)


def pipeline(work, stages, configs):
    return ["PIPELINE.STAGES", repr(tuple(stages)), "PIPELINE.CONFIGS", repr(tuple(str(c) for c in configs)),
            "OUTPUT_DIR", str(work / "out"), "DATASETS.ROOT", str(work / "datasets"), *SHARED]


def manifest(work):
    return json.loads((work / "out" / "manifest.json").read_text())


def stage_configs(work, weights, teacher_gates):
    (work / "teacher.yml").write_text(f"_BASE_: {SYNTHETIC}/bot_r18.yml\nMODEL:\n  WEIGHTS: {weights}\n"
                                      f"TEST:\n  GATES: {json.dumps(list(teacher_gates))}\n")
    (work / "distill.yml").write_text(f"_BASE_: {SYNTHETIC}/distill_r18.yml\nTEST:\n  GATES: ['mAP >= 0.01 * teacher']\n")
    return [work / "teacher.yml", work / "distill.yml"]


def test_a_teacher_that_never_learned_stops_at_its_absolute_floor(tmp_path, monkeypatch, capsys):
    """A relative gate after it ('mAP >= 0.01 * teacher') would accept any student of it: the floor is what stops
    the chain, at the teacher, before distillation runs."""
    weights = tmp_path / "untrained.pth"
    save_checkpoint(str(weights), tiny_model())  # random weights: a teacher that never learned
    code = call_tool(monkeypatch, *pipeline(tmp_path, ("teacher", "distill"),
                                            stage_configs(tmp_path, weights, ["mAP >= 90"])))
    assert code == 3
    stages = manifest(tmp_path)["stages"]
    assert [s["status"] for s in stages] == ["rejected", "not run"]
    failed = [g for g in stages[0]["gates"] if not g["passed"]]
    assert [g["rule"] for g in failed] == ["mAP >= 90"]
    assert not (tmp_path / "out" / "distill").exists()


def test_a_nan_teacher_stops_the_chain_saying_nan(tmp_path, monkeypatch, capsys):
    model = tiny_model()
    with torch.no_grad():
        model.heads.bottleneck[0].weight.fill_(float("nan"))  # the BNNeck: every embedding is NaN
    weights = tmp_path / "nan.pth"
    save_checkpoint(str(weights), model)
    code = call_tool(monkeypatch, *pipeline(tmp_path, ("teacher", "distill"),
                                            stage_configs(tmp_path, weights, ["mAP >= 0"])))
    err = capsys.readouterr().err
    assert code == 3 and "NaN never passes" in err
    stages = manifest(tmp_path)["stages"]
    assert [s["status"] for s in stages] == ["rejected", "not run"]
    assert {g["rule"] for g in stages[0]["gates"] if not g["passed"]} >= {"mAP >= 0", "collapse_mean_cosine <= 0.99"}


class NormalisedTwice(torch.nn.Module):
    """An exported model that ImageNet-normalises its RGB 0..255 input and then hands it to a model that normalises
    again inside (fast-reid #421): every input reaches the network as nearly the same flat image."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model
        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model((x / 255.0 - self.mean) / self.std)


def test_an_exported_model_that_normalises_twice_is_stopped_by_the_collapse_check(tmp_path, monkeypatch):
    """Its FP32 reference is the same broken file, so the relative gates on INT8 vs FP32 pass; the embeddings of
    every image point the same way, which only the built-in collapse check sees."""
    source = export_onnx(NormalisedTwice(tiny_model().eval()), str(tmp_path / "student_fp32.onnx"), SIZE)
    (tmp_path / "quantize.yml").write_text(
        f"_BASE_: {SYNTHETIC}/quant_r18.yml\nQUANT:\n  SOURCE: {source}\n"
        "TEST:\n  GATES: ['mAP >= fp32 - 5', 'cosine_mean >= 0.9']\n")
    code = call_tool(monkeypatch, *pipeline(tmp_path, ("quantize",), [tmp_path / "quantize.yml"]))
    assert code == 3
    (stage,) = manifest(tmp_path)["stages"]
    passed = {g["rule"]: g["passed"] for g in stage["gates"]}
    assert passed["mAP >= fp32 - 5"] and passed["cosine_mean >= 0.9"]  # the relative gates are fooled
    assert not passed["collapse_mean_cosine <= 0.99"]
    assert not (tmp_path / "out" / "quantize" / "student_int8.onnx").exists()
