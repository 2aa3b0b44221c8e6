"""The ``--full-size`` stage of benchmarks/gpu_check.py (CUDA only): the synthetic benchmark rendered at 256x128
and the chosen pair trained at 256x128 input within a wall-clock budget: the R50-IBN teacher
(configs/synthetic/bot_r50_ibn.yml, AMP) and the ResNet-18 student distilled from it (distill_r18.yml).

No config key stops training on time, and a run cut short has no final model, so the stage first runs both for a
few iterations (probes: step time and fixed cost of each run), then sizes the real runs to fit what is left of the
budget, keeping the recipe's schedule (12 epochs, cosine) over fewer iterations. INT8 and speed are measured later
on a CPU machine, from the run folders packed into DIR/full_size_runs.tar.gz.
"""

from __future__ import annotations

import os
import sys
import tarfile
import time
from typing import Dict, List, Tuple

from _gpu_runner import Skip, StepError, StepResult, config, pick, run_command, run_metrics, tool
from _gpu_steps import CheckContext, loader_workers

SIZE = "[256, 128]"
FULL = ["DATASETS.SYNTHETIC.SIZE", SIZE, "INPUT.SIZE_TRAIN", SIZE, "INPUT.SIZE_TEST", SIZE,
        "INPUT.PADDING.SIZE", "10", "SOLVER.AMP.ENABLED", "True", "CUDNN_BENCHMARK", "True", "TEST.EVAL_PERIOD", "0",
        "SOLVER.CHECKPOINT_PERIOD", "0"]
EPOCHS = 12  # the synthetic recipe's (configs/_base_/synthetic.yml)
PROBE_ITERS = 20  # the throughput hook skips the first 5 of them
TEACHER_SHARE = 0.6  # of the training time left after the probes
MIN_ITERS = 50
# What the archive keeps of each run: enough for tools/quantize.py QUANT.SOURCE and tools/evaluate.py.
KEPT = ("config.yaml", "model_final.pth", "metrics.json", "status.json", "train_log.jsonl")
ARCHIVE = "full_size_runs.tar.gz"


def plan_iterations(remaining_s: float, teacher: Tuple[float, float], student: Tuple[float, float]) -> Tuple[int, int]:
    """Iterations of the teacher and the student that fit ``remaining_s``.

    Args:
        teacher, student: (fixed seconds of one run, seconds per iteration), measured by the probes.

    Raises:
        StepError: the budget cannot hold MIN_ITERS iterations of each.
    """
    train_s = remaining_s - teacher[0] - student[0]
    t_iters = int(TEACHER_SHARE * train_s / teacher[1]) if train_s > 0 else 0
    s_iters = int((1.0 - TEACHER_SHARE) * train_s / student[1]) if train_s > 0 else 0
    if min(t_iters, s_iters) < MIN_ITERS:
        raise StepError(f"{remaining_s:.0f} s left after the probes hold {t_iters} teacher and {s_iters} student "
                        f"iterations (< {MIN_ITERS}): raise --budget-s")
    return t_iters, s_iters


def schedule(iters: int) -> List[str]:
    """The recipe's 12 epochs over ``iters`` iterations (rounded down to whole epochs)."""
    per_epoch = max(1, iters // EPOCHS)
    return ["SOLVER.MAX_EPOCH", str(EPOCHS), "SOLVER.ITERS_PER_EPOCH", str(per_epoch),
            "SOLVER.WARMUP_ITERS", str(min(150, max(1, per_epoch * EPOCHS // 10)))]


class _Runs:
    def __init__(self, ctx: CheckContext):
        self.ctx = ctx
        self.root = ctx.folder("full_size")
        self.base = ["DATASETS.ROOT", ctx.data_root, "MODEL.DEVICE", "cuda", "DATALOADER.NUM_WORKERS",
                     str(loader_workers()), *FULL]

    def folder(self, name: str) -> str:
        return os.path.join(self.root, name)

    def teacher(self, name: str, solver: List[str]) -> Tuple[float, Dict[str, object]]:
        command = [sys.executable, tool("train_teacher.py"), "--config-file", config("synthetic", "bot_r50_ibn.yml"),
                   *self.base, *solver, "OUTPUT_DIR", self.folder(name)]
        return self._run(name, command)

    def student(self, name: str, teacher: str, solver: List[str]) -> Tuple[float, Dict[str, object]]:
        command = [sys.executable, tool("distill.py"), "--config-file", config("synthetic", "distill_r18.yml"),
                   *self.base, *solver, "DISTILL.TEACHERS.CONFIGS", repr((self.folder(teacher),)),
                   "DISTILL.TEACHERS.WEIGHTS", "()", "OUTPUT_DIR", self.folder(name)]
        return self._run(name, command)

    def _run(self, name: str, command: List[str]) -> Tuple[float, Dict[str, object]]:
        """(wall seconds, metrics) of one tool run; StepError when it fails (a failed gate too)."""
        start = time.perf_counter()
        text = run_command(command, self.ctx.log(f"full_size_{name}"), self.ctx.env, self.ctx.timeout_s)
        return time.perf_counter() - start, run_metrics(self.folder(name), text)


def _cost(seconds: float, metrics: Dict[str, object]) -> Tuple[float, float]:
    """(fixed seconds, seconds per iteration) of a probe run."""
    per_iter = float(metrics.get("train_seconds_per_iter") or 0.0)
    if per_iter <= 0:
        raise StepError("the probe reported no training throughput")
    return max(0.0, seconds - PROBE_ITERS * per_iter), per_iter


def pack(folders: Dict[str, str], archive: str) -> None:
    with tarfile.open(archive, "w:gz") as tar:
        for name, folder in folders.items():
            for kept in KEPT:
                if os.path.isfile(os.path.join(folder, kept)):
                    tar.add(os.path.join(folder, kept), arcname=f"full_size/{name}/{kept}")


def full_size_step(ctx: CheckContext, budget_s: float, out_dir: str, result: StepResult) -> None:
    """Probe, plan, train teacher then student at 256x128; the run folders packed into DIR/full_size_runs.tar.gz."""
    if ctx.device != "cuda":
        raise Skip("needs CUDA (teacher and distillation train on the GPU)")
    start, runs, m = time.perf_counter(), _Runs(ctx), result.metrics
    probe = ["SOLVER.MAX_EPOCH", "1", "SOLVER.ITERS_PER_EPOCH", str(PROBE_ITERS), "SOLVER.WARMUP_ITERS", "2"]
    teacher_cost = _cost(*runs.teacher("probe_teacher", probe))  # renders the 256x128 benchmark too
    student_cost = _cost(*runs.student("probe_student", "probe_teacher", probe))
    m.update({"budget_s": budget_s, "probe_seconds": round(time.perf_counter() - start, 1),
              "teacher_s_per_iter": round(teacher_cost[1], 4), "student_s_per_iter": round(student_cost[1], 4)})
    t_iters, s_iters = plan_iterations(budget_s - (time.perf_counter() - start), teacher_cost, student_cost)
    m.update({"teacher_iters": t_iters, "student_iters": s_iters})
    try:
        seconds, metrics = runs.teacher("teacher", schedule(t_iters))
        m.update({"teacher_seconds": round(seconds, 1), **{f"teacher_{k}": v for k, v in pick(metrics, "mAP").items()}})
        seconds, metrics = runs.student("distill", "teacher", schedule(s_iters))
        m.update({"student_seconds": round(seconds, 1), **pick(metrics, "mAP", "rank1")})
    finally:  # a run its gate rejected is packed too: its folder says so (status.json)
        if os.path.isdir(runs.folder("teacher")):
            pack({name: runs.folder(name) for name in ("teacher", "distill")}, os.path.join(out_dir, ARCHIVE))
            m["archive"] = os.path.join(out_dir, ARCHIVE)
        m["used_s"] = round(time.perf_counter() - start, 1)
    result.notes.append(f"INT8 and speed on a CPU: tar xzf {ARCHIVE}; tools/quantize.py --config-file "
                        "configs/synthetic/quant_r18.yml QUANT.SOURCE full_size/distill DATASETS.ROOT <data> "
                        "INPUT.SIZE_TEST '[256, 128]' DATASETS.SYNTHETIC.SIZE '[256, 128]'")
