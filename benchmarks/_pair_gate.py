"""The recipe's speed gate (``pair_selection.py gate``): the INT8 student against the FP32 teacher at deployment size,
timed interleaved in one process, judged by the speed rules of the config's TEST.GATES with the same gate mechanism
as every tool (compressreid.gates), plus built-in stability rules: unstable timing fails with a message saying so.

The config names the deployment pair with ordinary keys: MODEL (the student), INPUT.SIZE_TEST (deployment size),
DISTILL.TEACHERS.CONFIGS[0] (the teacher), QUANT.TARGETS[0] (the INT8 format), QUANT.BENCHMARK.THREADS, TEST.GATES
(speed rules only, e.g. "speedup_vs_teacher_b32_low >= 10") and OUTPUT_DIR (metrics.json and status.json).
"""

from __future__ import annotations

import os
import tempfile
from typing import Dict, List

import torch

from compressreid.config import load_config
from compressreid.engine.run_dir import RunDirectory
from compressreid.errors import ConfigError, GateFailed
from compressreid.export.cpu import this_machine
from compressreid.export.onnx_export import example_images, export_onnx
from compressreid.gates import REJECTED, GateSet, status_of
from compressreid.modeling import build_model
from compressreid.quant.targets import QUANT_TARGETS

import _bench
from _pair_ladder import warm_bn
from _pair_speed import SpeedSettings, Teacher, available_runtimes, machine_line, measure_pair
from _pair_timing import StabilityLimits, judge_speed

TOOL = "pair_speed_gate"


def speed_metric_names(batches) -> List[str]:
    """Every number the gate measures per batch (what its rules may name)."""
    return [f"{stem}_b{b}" for b in batches for stem in (
        "speedup_vs_teacher", "timing_ratio_cv", "timing_median_over_min", "timing_cpu_share", "timing_rounds",
        "timing_stable")] + [
        f"speedup_vs_teacher_b{b}_low" for b in batches]


def teacher_config(cfg) -> str:
    """DISTILL.TEACHERS.CONFIGS[0] as a config file (a run folder's config.yaml)."""
    if not cfg.DISTILL.TEACHERS.CONFIGS:
        raise ConfigError("the speed gate needs the teacher in DISTILL.TEACHERS.CONFIGS (a config file or run folder)")
    path = cfg.DISTILL.TEACHERS.CONFIGS[0]
    return os.path.join(path, "config.yaml") if os.path.isdir(path) else path


def student_int8(cfg, folder: str, size) -> str:
    """The config's student at ``size``, random weights with warmed BN, in QUANT.TARGETS[0]'s INT8 format."""
    torch.manual_seed(0)
    model = warm_bn(build_model(cfg).eval(), size)
    fp32 = export_onnx(model, os.path.join(folder, "student_fp32.onnx"), size)
    fmt = QUANT_TARGETS.get(cfg.QUANT.TARGETS[0]).from_config(cfg).fmt
    calibration = [example_images(size, 8, seed) for seed in range(4)]
    return _bench.quantize_ours(fp32, os.path.join(folder, "student_int8.onnx"), calibration, fmt)


def flat_metrics(summary: Dict[str, object]) -> Dict[str, float]:
    return {k: v for per_batch in summary["speedup"].values() for k, v in per_batch.items()}


def run_gate(args, limits: StabilityLimits) -> None:
    """Measure, judge and record; raises GateFailed (exit 3) when a rule fails or the timing is unstable."""
    cfg = load_config(args.config_file, args.opts)
    size = tuple(cfg.INPUT.SIZE_TEST)
    GateSet(cfg.TEST.GATES, f"stage '{TOOL}'").validate(speed_metric_names(args.batches), {}, ())  # before any work
    settings = SpeedSettings(size, tuple(args.batches), tuple(args.calls), args.rounds,
                             cfg.QUANT.BENCHMARK.THREADS or args.threads, tuple(args.runtimes), teacher_config(cfg),
                             limits=limits)
    settings.runtimes = tuple(available_runtimes(settings.runtimes)[0])
    torch.set_num_threads(settings.threads)
    print(machine_line(this_machine()))
    run = RunDirectory(cfg.OUTPUT_DIR).start(cfg, TOOL)
    with run.guard(), tempfile.TemporaryDirectory(prefix="pair-gate-") as folder:
        int8 = args.int8 or student_int8(cfg, folder, size)
        teacher = Teacher(settings, folder, args.teacher_onnx)
        summary = measure_pair(teacher, int8, settings)
        metrics = flat_metrics(summary)
        payload = {**metrics, "machine": this_machine(), "settings": settings.fingerprint(),
                   "best_runtime": summary["best_runtime"], "cells": summary["cells"],
                   "same_runtime_speedup": summary["same_runtime_speedup"], "student": int8 if args.int8 else
                   "config MODEL, random weights", "teacher": args.teacher_onnx or settings.teacher_config}
        for b, v in summary["speedup"].items():
            best = summary["best_runtime"][b]
            print(f"{b}: speed-up {v[f'speedup_vs_teacher_{b}']:.2f}x (low {v[f'speedup_vs_teacher_{b}_low']:.2f}, "
                  f"CV {v[f'timing_ratio_cv_{b}']:.3f}, median/min {v[f'timing_median_over_min_{b}']:.2f}, CPU share "
                  f"{v[f'timing_cpu_share_{b}']:.2f}), student {best['student INT8']}, teacher {best['teacher FP32']}")
        try:
            decisions = judge_speed(cfg.TEST.GATES, metrics, limits, f"stage '{TOOL}'")
        except GateFailed as exc:
            run.finish(payload, exc.decisions, REJECTED)
            raise
        run.finish(payload, decisions, status_of(decisions, bool(cfg.TEST.GATES)))
    print(f"speed gate passed: {run.file('metrics.json')}")
