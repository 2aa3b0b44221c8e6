"""The training steps of benchmarks/gpu_check.py, each a real tool run as a subprocess: teacher with AMP,
distillation with that teacher, QAT for the tensorrt target, and a torchrun job (plus a collective check).

Sizes: ``--tiny`` is the tests' tiny synthetic setting (8 training identities, 32x16 input, width 1/8, 2 iterations
per stage); otherwise the synthetic recipe's data and input (64x32) with a few hundred iterations per stage.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass
from typing import Dict, List, Mapping

from _gpu_runner import StepResult, config, pick, run_command, run_metrics, tool

# The tests' tiny synthetic benchmark (tests/tools/test_quantize_tool.py TINY, tests/pipeline/test_compress_smoke.py
# SHARED): 8 training identities, 32x16 input, the data loaded in the main process.
TINY_DATA = [
    "DATASETS.SYNTHETIC.NUM_TRAIN_IDS", "8", "DATASETS.SYNTHETIC.NUM_TEST_IDS", "6",
    "DATASETS.SYNTHETIC.NUM_DISTRACTORS", "4", "DATASETS.SYNTHETIC.SIZE", "[64, 32]",
    "INPUT.SIZE_TRAIN", "[32, 16]", "INPUT.SIZE_TEST", "[32, 16]", "DATALOADER.NUM_WORKERS", "0",
    "TEST.IMS_PER_BATCH", "64", "SOLVER.IMS_PER_BATCH", "16",
]
# Width 1/8: FEAT_DIM is 2048 or 512 times the width (bottleneck ResNet-50 teacher, basic-block ResNet-18 student).
TINY_TEACHER = ["MODEL.BACKBONE.WIDTH", "0.125", "MODEL.BACKBONE.FEAT_DIM", "256"]
TINY_STUDENT = ["MODEL.BACKBONE.WIDTH", "0.125", "MODEL.BACKBONE.FEAT_DIM", "64"]
TINY_QUANT = ["QUANT.BENCHMARK.ITERS", "2", "QUANT.BENCHMARK.THREADS", "1", "QUANT.BENCHMARK.BATCHES", "(1,)",
              "QUANT.CALIBRATION.NUM_IMAGES", "8", "QUANT.CALIBRATION.BATCH_SIZE", "4"]

# The check is about the code paths, not the quality of a few hundred iterations: gates and the collapse check
# are lenient (their numbers are still reported); the tensorrt target's structural rules still apply.
LENIENT = ["TEST.GATES", '("mAP >= 0",)', "TEST.COLLAPSE.MAX_MEAN_COSINE", "1.0",
           "TEST.COLLAPSE.MIN_DISTINCT_NN_SHARE", "0.0", "TEST.ROC.ENABLED", "False", "TEST.WORST_QUERIES", "0",
           "TEST.EVAL_PERIOD", "0"]

# Iterations per stage (tiny, GPU-sized check).
ITERS = {"teacher": (2, 300), "distill": (2, 300), "qat": (2, 200), "ddp": (2, 100)}


def loader_workers() -> int:
    """DataLoader processes of the GPU-sized runs: half the cores, 2 to 8."""
    return max(2, min(8, (os.cpu_count() or 4) // 2))


@dataclass
class CheckContext:
    """Where and how the check runs.

    Attributes:
        device: "cuda" or "cpu" (MODEL.DEVICE of every tool).
        tiny: the tests' tiny sizes.
        work: scratch folder (run folders, logs); datasets under ``data_root``.
        ddp_procs: torchrun --nproc_per_node.
        timeout_s: the limit of one tool run.
    """

    device: str
    tiny: bool
    work: str
    data_root: str
    ddp_procs: int = 1
    timeout_s: float = 600.0

    @property
    def env(self) -> Dict[str, str]:
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        if self.tiny:  # tiny models on a shared CPU: one thread per process, as the test suite runs
            env.setdefault("OMP_NUM_THREADS", "1")
        return env

    def folder(self, name: str) -> str:
        return os.path.join(self.work, name)

    def log(self, name: str) -> str:
        return os.path.join(self.work, "logs", f"{name}.log")

    def iters(self, stage: str) -> int:
        return ITERS[stage][0 if self.tiny else 1]

    def data_opts(self) -> List[str]:
        opts = ["DATASETS.ROOT", self.data_root, "MODEL.DEVICE", self.device, *LENIENT]
        if self.tiny:
            return [*TINY_DATA, *opts]
        return [*opts, "DATALOADER.NUM_WORKERS", str(loader_workers())]

    def solver_opts(self, stage: str) -> List[str]:
        n = self.iters(stage)
        return ["SOLVER.MAX_EPOCH", "1", "SOLVER.ITERS_PER_EPOCH", str(n), "SOLVER.WARMUP_ITERS", str(max(1, n // 10)),
                "SOLVER.CHECKPOINT_PERIOD", "0"]

    def run_tool(self, name: str, command: List[str]) -> str:
        return run_command(command, self.log(name), self.env, self.timeout_s)


def training_numbers(metrics: Mapping[str, object]) -> Dict[str, object]:
    out = pick(metrics, "mAP", "rank1", "train_images_per_second", "train_seconds_per_iter")
    if out.get("train_seconds_per_iter"):
        out["steps_per_second"] = round(1.0 / float(out["train_seconds_per_iter"]), 2)
    return out


def teacher_step(ctx: CheckContext, result: StepResult) -> None:
    """tools/train_teacher.py on configs/synthetic/bot_r50_ibn.yml with SOLVER.AMP.ENABLED True."""
    out = ctx.folder("teacher")
    command = [sys.executable, tool("train_teacher.py"), "--config-file", config("synthetic", "bot_r50_ibn.yml"),
               *ctx.data_opts(), *ctx.solver_opts("teacher"), *(TINY_TEACHER if ctx.tiny else []),
               "SOLVER.AMP.ENABLED", "True", "OUTPUT_DIR", out]
    text = ctx.run_tool("teacher_amp", command)
    # the trainer warns when AMP was asked for but cannot apply (CPU): then it ran in fp32
    amp_active = ctx.device == "cuda" and "SOLVER.AMP.ENABLED applies to CUDA only" not in text
    result.metrics.update({**training_numbers(run_metrics(out, text)), "amp_active": amp_active,
                           "iterations": ctx.iters("teacher"), "run": out})
    if not amp_active:
        result.notes.append("AMP is a no-op on CPU (SOLVER.AMP.ENABLED applies to CUDA only): trained in fp32")


def distill_step(ctx: CheckContext, result: StepResult) -> None:
    """tools/distill.py on configs/synthetic/distill_r18.yml, the teacher read from the teacher step's run folder."""
    out = ctx.folder("distill")
    command = [sys.executable, tool("distill.py"), "--config-file", config("synthetic", "distill_r18.yml"),
               *ctx.data_opts(), *ctx.solver_opts("distill"), *(TINY_STUDENT if ctx.tiny else []),
               "SOLVER.AMP.ENABLED", str(ctx.device == "cuda"),
               "DISTILL.TEACHERS.CONFIGS", repr((ctx.folder("teacher"),)), "DISTILL.TEACHERS.WEIGHTS", "()",
               "OUTPUT_DIR", out]
    text = ctx.run_tool("distill", command)
    metrics = run_metrics(out, text)
    teacher = metrics.get("teacher") if isinstance(metrics.get("teacher"), dict) else {}
    result.metrics.update({**training_numbers(metrics), "teacher_mAP": pick(teacher, "mAP").get("mAP"),
                           "iterations": ctx.iters("distill"), "run": out})


def qat_step(ctx: CheckContext, result: StepResult) -> None:
    """tools/quantize.py QUANT.METHOD qat for the tensorrt target, fine-tuned on MODEL.DEVICE; the INT8 file's mAP
    (judged on its Q/DQ semantics in ONNX Runtime) against the fake-quant model it was trained as."""
    out = ctx.folder("qat")
    n = ctx.iters("qat")
    command = [sys.executable, tool("quantize.py"), "--config-file", config("synthetic", "qat_student.yml"),
               *ctx.data_opts(), *(TINY_STUDENT + TINY_QUANT if ctx.tiny else []), "QUANT.METHOD", "qat",
               "QUANT.SOURCE", ctx.folder("distill"), "QUANT.TARGETS", '("tensorrt",)', "QUANT.QAT.ITERS", str(n),
               "QUANT.QAT.FREEZE_BN_ITER", str(max(1, n * 2 // 5)),
               "QUANT.QAT.FREEZE_OBSERVER_ITER", str(max(1, n * 7 // 10)), "OUTPUT_DIR", out]
    text = ctx.run_tool("qat", command)
    metrics = run_metrics(out, text)
    fake_quant = metrics.get("fake_quant", {}) if isinstance(metrics.get("fake_quant"), dict) else {}
    fp32 = metrics.get("fp32", {}) if isinstance(metrics.get("fp32"), dict) else {}
    numbers = {"int8_mAP": pick(metrics, "mAP").get("mAP"), "fake_quant_mAP": pick(fake_quant, "mAP").get("mAP"),
               "fp32_mAP": pick(fp32, "mAP").get("mAP"),
               **pick(metrics, "cosine_mean", "cosine_min", "top10_overlap", "accepted", "trt_unsupported_ops",
                      "trt_qdq_not_symmetric_int8", "trt_per_axis_activation_scales", "trt_quantized_instance_norms",
                      "trt_opset_over_max")}
    if numbers["int8_mAP"] is not None and numbers["fake_quant_mAP"] is not None:
        numbers["int8_minus_fake_quant_mAP"] = round(numbers["int8_mAP"] - numbers["fake_quant_mAP"], 4)
    result.metrics.update({**numbers, "iterations": n, "run": out,
                           "int8_file": os.path.join(out, "student_int8.onnx")})
    result.notes.append("INT8 mAP is the file's Q/DQ semantics run in ONNX Runtime on the CPU (what TensorRT's "
                        "kernels reproduce up to requantization rounding); the tensorrt step runs the engine")


def ddp_step(ctx: CheckContext, result: StepResult) -> None:
    """``torchrun --nproc_per_node=N tools/train_teacher.py`` (ResNet-18), then a collective under torchrun with the
    backend the device needs (nccl on CUDA, gloo on CPU)."""
    out = ctx.folder("ddp")
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={ctx.ddp_procs}"]
    command = [*torchrun, tool("train_teacher.py"), "--dist-timeout", "120", "--config-file",
               config("synthetic", "bot_r18.yml"), *ctx.data_opts(), *ctx.solver_opts("ddp"),
               *(TINY_STUDENT if ctx.tiny else []), "OUTPUT_DIR", out]
    text = ctx.run_tool("ddp_train", command)
    result.metrics.update({**training_numbers(run_metrics(out, text)), "world_size": ctx.ddp_procs,
                           "iterations": ctx.iters("ddp"), "run": out})
    collective = os.path.join(ctx.work, "ddp_collective.json")
    helper = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_gpu_collective.py")
    ctx.run_tool("ddp_collective", [*torchrun, helper, "--device", ctx.device, "--out", collective])
    with open(collective, "r", encoding="utf-8") as handle:
        facts = json.load(handle)
    result.metrics.update({k: facts[k] for k in ("backend", "all_reduce_ok", "nccl_version") if k in facts})
    if facts.get("world_size") != ctx.ddp_procs or not facts.get("all_reduce_ok"):
        raise RuntimeError(f"collective check: {facts}")
    if ctx.ddp_procs == 1:
        result.notes.append("at world size 1 the trainer runs without a process group (DistContext.enabled is "
                            f"False); the {facts.get('backend')} backend is exercised by the collective check")


def ptq_for_tensorrt(ctx: CheckContext) -> str:
    """A PTQ tensorrt-target file of the distilled student (when the QAT step failed); returns its run folder."""
    out = ctx.folder("ptq")
    command = [sys.executable, tool("quantize.py"), "--config-file", config("synthetic", "quant_r18.yml"),
               *ctx.data_opts(), *(TINY_STUDENT + TINY_QUANT if ctx.tiny else []), "QUANT.METHOD", "ptq",
               "QUANT.SOURCE", ctx.folder("distill"), "QUANT.TARGETS", '("tensorrt",)', "OUTPUT_DIR", out]
    ctx.run_tool("ptq", command)
    return out
