"""A prepared GPU check: every CUDA and TensorRT code path of compressreid run once, timed, in one command.

    python benchmarks/gpu_check.py --out DIR                      # CUDA when there is one, about 6 minutes on one GPU
    python benchmarks/gpu_check.py --out DIR --full-size --budget-s 420
    python benchmarks/gpu_check.py --out DIR --device cpu --tiny  # the CPU-sized run the test suite makes

Steps, in order, each ok / failed (its first error line) / skipped (why); a failed step does not stop the steps
that do not need it:
  teacher_amp  tools/train_teacher.py, R50-IBN (configs/synthetic/bot_r50_ibn.yml) with SOLVER.AMP.ENABLED
  distill      tools/distill.py (configs/synthetic/distill_r18.yml) from that teacher's run folder: steps/s
  qat          tools/quantize.py QUANT.METHOD qat, QUANT.TARGETS ("tensorrt",), fine-tuned on MODEL.DEVICE
  ddp          torchrun tools/train_teacher.py (ResNet-18), and an all-reduce with nccl (CUDA) / gloo (CPU)
  tensorrt     the qat file as a TensorRT INT8 engine: cosine to FP32 ONNX, mAP, latency at batch 1 / 32 against
               the FP32 teacher as a TensorRT FP16 engine (needs CUDA and the tensorrt package)
  full_size    --full-size: the benchmark at 256x128 and the pair trained there within --budget-s (CUDA only)
Writes DIR/gpu_check.json and DIR/gpu_check.md (printed too); run folders and logs go to --work (DIR/work).
Exit codes: 0 every step that ran passed, 1 a step failed, 2 bad usage (e.g. --device cuda without a GPU).
"""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import os
import platform
import shutil
import sys
import time
from typing import Dict, List

import torch

from _gpu_full_size import full_size_step
from _gpu_runner import Skip, Steps, write_report
from _gpu_steps import CheckContext, ddp_step, distill_step, qat_step, teacher_step
from compressreid.export.cpu import this_machine

STEPS = ("teacher_amp", "distill", "qat", "ddp", "tensorrt", "full_size")
# What the check writes under --work (cleared first, so no earlier run's file is taken for this run's); the
# rendered datasets are kept.
OWNED = ("teacher", "distill", "qat", "ptq", "ddp", "tensorrt", "full_size", "logs", "ddp_collective.json")
TENSORRT_HINT = "pip install tensorrt-cu13==10.16.1.11 (cu13 torch) or tensorrt-cu12 (cu12 torch)"


def parse_args(argv: List[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="folder of gpu_check.json and gpu_check.md")
    parser.add_argument("--device", choices=("cuda", "cpu"), default="", help="default: cuda when available")
    parser.add_argument("--tiny", action="store_true", help="the tests' tiny data and models (CPU: about a minute)")
    parser.add_argument("--full-size", action="store_true", help="add the 256x128 teacher + distillation stage")
    parser.add_argument("--budget-s", type=float, default=480.0,
                        help="wall-clock seconds of the --full-size stage (probes included)")
    parser.add_argument("--work", default="", help="run folders and logs (default DIR/work)")
    parser.add_argument("--data-root", default="", help="DATASETS.ROOT of every run (default WORK/datasets)")
    parser.add_argument("--ddp-procs", type=int, default=0, help="torchrun processes (default: GPUs, or 1 on CPU)")
    parser.add_argument("--steps", default="", help=f"comma-separated subset of {','.join(STEPS)}")
    parser.add_argument("--timeout-s", type=float, default=900.0, help="limit of one tool run")
    return parser.parse_args(argv)


def package_version(*names: str) -> str:
    for name in names:
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return "not installed"


def environment(device: str) -> Dict[str, object]:
    """The machine and the versions the numbers belong to."""
    tensorrt = (package_version("tensorrt", "tensorrt-cu13", "tensorrt-cu12", "tensorrt-cu11")
                if importlib.util.find_spec("tensorrt") else "not installed")
    versions = {"python": platform.python_version(), "torch": torch.__version__, "cuda": torch.version.cuda or "none",
                "onnxruntime": package_version("onnxruntime"), "tensorrt": tensorrt}
    env: Dict[str, object] = {"versions": versions, "cpu": this_machine()}
    if device == "cuda":
        props = torch.cuda.get_device_properties(0)
        versions["cudnn"] = str(torch.backends.cudnn.version())
        env.update({"device_name": torch.cuda.get_device_name(0), "gpus": torch.cuda.device_count(),
                    "capability": f"{props.major}.{props.minor}", "memory_gib": round(props.total_memory / 2**30, 1)})
    else:
        env["device_name"] = env["cpu"]["processor"] or platform.machine()
    return env


def tensorrt_skip_reason(device: str) -> str:
    """Why the tensorrt step cannot run here ("" when it can); the package is looked up, not imported."""
    reasons = [] if device == "cuda" else ["no CUDA device (--device cpu)"]
    if importlib.util.find_spec("tensorrt") is None:
        reasons.append(f"tensorrt not installed ({TENSORRT_HINT})")
    return "; ".join(reasons)


def prepare(work: str) -> None:
    os.makedirs(work, exist_ok=True)
    for name in OWNED:
        path = os.path.join(work, name)
        if os.path.isdir(path):
            shutil.rmtree(path)
        elif os.path.exists(path):
            os.remove(path)


def run_steps(ctx: CheckContext, args: argparse.Namespace, steps: Steps) -> None:
    def tensorrt(result):
        reason = tensorrt_skip_reason(ctx.device)
        if reason:
            raise Skip(reason)
        import _gpu_trt  # torch-side CUDA and compressreid evaluation imports, only where the step runs

        _gpu_trt.tensorrt_step(ctx, steps, result)

    def full_size(result):
        if not args.full_size:
            raise Skip("off (--full-size)")
        full_size_step(ctx, args.budget_s, args.out, result)

    steps.run("teacher_amp", lambda r: teacher_step(ctx, r))
    steps.run("distill", lambda r: distill_step(ctx, r), needs=("teacher_amp",))
    steps.run("qat", lambda r: qat_step(ctx, r), needs=("distill",))
    steps.run("ddp", lambda r: ddp_step(ctx, r))
    steps.run("tensorrt", tensorrt)
    steps.run("full_size", full_size)


def main(argv: List[str]) -> int:
    args = parse_args(argv)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        print("error: --device cuda, but torch sees no CUDA device", file=sys.stderr)
        return 2
    selected = [s.strip() for s in args.steps.split(",") if s.strip()] or None
    unknown = sorted(set(selected or ()) - set(STEPS))
    if unknown:
        print(f"error: unknown step(s) {', '.join(unknown)}; expected some of {', '.join(STEPS)}", file=sys.stderr)
        return 2
    args.out = os.path.abspath(args.out)
    work = os.path.abspath(args.work or os.path.join(args.out, "work"))
    os.makedirs(args.out, exist_ok=True)
    prepare(work)
    procs = args.ddp_procs or (max(1, torch.cuda.device_count()) if device == "cuda" else 1)
    ctx = CheckContext(device, args.tiny, work, os.path.abspath(args.data_root or os.path.join(work, "datasets")),
                       procs, args.timeout_s)
    start = time.perf_counter()
    options = {"device": device, "tiny": args.tiny, "full_size": args.full_size, "budget_s": args.budget_s,
               "ddp_procs": procs, "work": work, "data_root": ctx.data_root}
    env = environment(device)

    def report(complete: bool) -> str:
        """Written after every step too, so a run killed from outside still leaves what it measured."""
        return write_report(args.out, {"passed": steps.passed, "complete": complete,
                                       "total_seconds": round(time.perf_counter() - start, 1),
                                       "command": [sys.executable, *sys.argv], "environment": env,
                                       "options": options, "steps": steps.results})

    steps = Steps(selected, after_step=lambda: report(False))
    run_steps(ctx, args, steps)
    print(report(True), end="")
    print(f"report: {os.path.join(args.out, 'gpu_check.json')}")
    return 0 if steps.passed else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
