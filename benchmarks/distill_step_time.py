"""Step time of distillation against plain student training, in the same process, on the same batch and machine.

Both steps are the engine's own (TrainLoop.step: forward, losses, backward, optimizer step): a SupervisedTask on
the student alone, and a DistillationTask with the configured teachers and losses. After a warm-up, the two are
timed in alternating rounds so that drift (thermal, other load) hits both alike. A teacher whose checkpoint is
missing is replaced by a randomly initialised one (timing does not depend on the weights).

    python benchmarks/distill_step_time.py --config-file configs/synthetic/distill_r18.yml
    python benchmarks/distill_step_time.py --config-file ... --teacher-bf16 --teacher-channels-last MODEL.DEVICE cuda
"""

from __future__ import annotations

import argparse
import copy
import itertools
import os
import statistics
import tempfile
import time
from typing import Dict, List

import torch

from compressreid.checkpoint import save_checkpoint
from compressreid.config import load_config
from compressreid.distill.sources import TeacherSource, resolve_teacher_sources, resolved_config
from compressreid.distill.task import build_distillation_task
from compressreid.engine.device import resolve_device
from compressreid.engine.loop import TrainLoop
from compressreid.engine.optim import build_optimizer
from compressreid.engine.supervised import SupervisedTask
from compressreid.modeling import build_model
from compressreid.modeling.losses import build_criterion


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config-file", required=True, help="a distillation config (DISTILL.TEACHERS set)")
    parser.add_argument("--batch", type=int, default=0, help="images per step (default SOLVER.IMS_PER_BATCH)")
    parser.add_argument("--classes", type=int, default=500,
                        help="training identities of student and teacher classifiers (synthetic benchmark: 500)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps of each task first")
    parser.add_argument("--steps", type=int, default=5, help="timed steps of each task per round")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds (plain, distill, plain, ...)")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch's default)")
    parser.add_argument("--teacher-bf16", action="store_true", help="teachers under bf16 autocast")
    parser.add_argument("--teacher-channels-last", action="store_true", help="teachers in channels_last")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE config overrides")
    return parser.parse_args()


def teacher_sources(cfg, classes: int, scratch: str) -> List[TeacherSource]:
    """The configured teachers; a missing checkpoint is replaced by a random one of the same architecture."""
    sources = []
    for i, source in enumerate(resolve_teacher_sources(cfg)):
        if not os.path.isfile(source.weights):
            path = os.path.join(scratch, f"random_teacher{i}.pth")
            save_checkpoint(path, build_model(source.load_config(), num_classes=classes))
            print(f"teacher {i}: {source.weights} not found, timing a randomly initialised {source.config}")
            source = TeacherSource(source.entry, source.config, path)
        sources.append(source)
    return sources


def make_batch(cfg, batch: int, classes: int, device: torch.device) -> Dict[str, object]:
    """Random RGB 0-255 images at INPUT.SIZE_TRAIN with P x K identity structure (triplet losses need positives)."""
    g = torch.Generator().manual_seed(0)
    k = max(1, cfg.DATALOADER.NUM_INSTANCE)
    images = torch.rand(batch, 3, *cfg.INPUT.SIZE_TRAIN, generator=g) * 255.0
    targets = (torch.arange(batch) // k) % classes
    return {"images": images.to(device), "targets": targets.to(device)}


def timed_steps(loop: TrainLoop, count: int, device: torch.device) -> List[float]:
    times = []
    for _ in range(count):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        loop.step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - start)
    return times


def main() -> None:
    args = parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    overrides = [*args.opts, "DISTILL.TEACHERS.BF16", str(args.teacher_bf16),
                 "DISTILL.TEACHERS.CHANNELS_LAST", str(args.teacher_channels_last)]
    cfg = load_config(args.config_file, overrides)
    device = resolve_device(cfg.MODEL.DEVICE)
    batch = make_batch(cfg, args.batch or cfg.SOLVER.IMS_PER_BATCH, args.classes, device)
    torch.manual_seed(cfg.SEED)
    plain_student = build_model(cfg, num_classes=args.classes).to(device)
    distill_student = copy.deepcopy(plain_student)  # the same student and initialisation for both
    plain = SupervisedTask(plain_student, build_criterion(cfg).to(device), device, cfg.SOLVER.BF16_CPU,
                           cfg.SOLVER.AMP.ENABLED)
    with tempfile.TemporaryDirectory() as scratch:
        sources = teacher_sources(cfg, args.classes, scratch)
        distill = build_distillation_task(resolved_config(cfg, sources), distill_student, args.classes, device)
    loops = {
        "plain": TrainLoop(plain, build_optimizer(cfg, plain_student), itertools.repeat(batch), 0, []),
        "distill": TrainLoop(distill, build_optimizer(cfg, distill.named_trainable_parameters()),
                             itertools.repeat(batch), 0, []),
    }
    times: Dict[str, List[float]] = {name: [] for name in loops}
    for loop in loops.values():
        timed_steps(loop, args.warmup, device)
    for _ in range(args.rounds):
        for name, loop in loops.items():
            times[name] += timed_steps(loop, args.steps, device)
    distill.close()
    mean = {name: statistics.fmean(t) for name, t in times.items()}
    print(f"device {device}, threads {torch.get_num_threads()}, batch {len(batch['targets'])} at "
          f"{list(cfg.INPUT.SIZE_TRAIN)}, teachers bf16={args.teacher_bf16} channels_last={args.teacher_channels_last}, "
          f"losses {list(cfg.DISTILL.LOSSES.NAME)}")
    for name in loops:
        median = statistics.median(times[name])
        print(f"{name:>8} step: mean {1000 * mean[name]:8.1f} ms  median {1000 * median:8.1f} ms  "
              f"({len(times[name])} steps)")
    print(f"   ratio: distill / plain = {mean['distill'] / mean['plain']:.2f}x")


if __name__ == "__main__":
    main()
