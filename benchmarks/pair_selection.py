"""Pick one teacher -> student pair that keeps both promises: INT8 student >= 10x the FP32 teacher's speed at >= 95%
of its mAP.

    python benchmarks/pair_selection.py speed                  # every ladder entry vs R50-IBN, 256x128, b1 and b32
    python benchmarks/pair_selection.py accuracy --teachers output/t5/r50ibn_zi_s0 --seeds 0 1
    python benchmarks/pair_selection.py table                  # Pareto table + plot per CPU kind, chosen pair marked
    python benchmarks/pair_selection.py gate --config-file configs/synthetic/pair_speed.yml   # the recipe's speed gate

Options go before --config-file (gate) and before KEY VALUE overrides; the per-batch options (--batches, --calls,
--runtimes) take several values, so end them with another option.

speed: each entry's INT8 file (the ort_portable format, random weights: latency does not depend on them) against the
FP32 teacher at 256x128, in ONNX Runtime and OpenVINO (compiled per batch), interleaved in one process; the best
runtime per model and batch; the paired speed-up (median of per-round ratios) and whether the timing was stable.
accuracy: the same architectures on the synthetic benchmark at a quarter of their width and 64x32 (so the
student/teacher MAC ratio stays the deployment pair's; the table prints both), distilled with the shipped recipe
from the teacher's run folder, INT8 in the portable target, one folder per step, seeds as given.
Both phases continue where they stopped: finished entries are skipped. An entry that cannot be built, exported or
quantized is reported and skipped. gate: the speed rules of a config's TEST.GATES judged on a fresh interleaved
measurement; unstable timing fails the gate with a message saying so (exit 3), never passes it.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Dict, List, Sequence

import torch

from compressreid.cli import run_tool, setup_logging
from compressreid.engine.io import atomic_write_json

from _pair_accuracy import AccuracySettings, accuracy_phase, collect
from _pair_ladder import DEFAULT_LADDER, DEPLOY_SIZE, TEACHER_DEPLOY, Entry, mac_ratios, parse_entry
from _pair_speed import RUNTIMES, SpeedSettings, kind_slug, speed_phase
from _pair_table import (Targets, build_rows, choose, kinds_and_batches, markdown, plot, speed_records)
from _pair_timing import StabilityLimits

DEFAULT_OUT = "output/pair_selection"


def add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--entries", nargs="+", default=list(DEFAULT_LADDER),
                        help="ladder entries <arch>_w<width>[_p<ratio>] (default: the whole ladder)")
    parser.add_argument("--out", default=DEFAULT_OUT, help="results folder (one file or folder per entry)")


def add_timing(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 32])
    parser.add_argument("--calls", type=int, nargs="+", default=[10, 2], help="timed calls per round, per batch")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runtimes", nargs="+", default=list(RUNTIMES), choices=RUNTIMES)
    parser.add_argument("--max-cv", type=float, default=StabilityLimits.max_ratio_cv,
                        help="largest coefficient of variation of the per-round speed-ups still called stable")
    parser.add_argument("--max-median-over-min", type=float, default=StabilityLimits.max_median_over_min,
                        help="largest median / fastest call of a timed model still called stable")
    parser.add_argument("--min-cpu-share", type=float, default=StabilityLimits.min_cpu_share,
                        help="smallest CPU time / (threads x wall time) of a timed model still called stable")


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="phase", required=True)
    speed = sub.add_parser("speed", help="INT8 students vs the FP32 teacher at deployment size")
    add_common(speed)
    add_timing(speed)
    speed.add_argument("--size", type=int, nargs=2, default=list(DEPLOY_SIZE), metavar=("H", "W"))
    speed.add_argument("--teacher-config", default=TEACHER_DEPLOY)
    speed.add_argument("--teacher-opts", nargs="*", default=[], help="KEY VALUE overrides of the teacher's config")
    speed.add_argument("--force", action="store_true", help="measure again entries already measured")
    acc = sub.add_parser("accuracy", help="distil + INT8 every entry on the synthetic benchmark")
    add_common(acc)
    acc.add_argument("--teachers", nargs="+", required=True, help="teacher run folders; seed i uses teachers[i %% n]")
    acc.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    acc.add_argument("--scale", type=float, default=0.25, help="width factor at the synthetic size")
    acc.add_argument("--opts", nargs="*", default=[], help="KEY VALUE overrides for every step")
    acc.add_argument("--distill-opts", nargs="*", default=[], help="KEY VALUE overrides for distillation only")
    acc.add_argument("--dry-run", action="store_true", help="print what would run, run nothing")
    table = sub.add_parser("table", help="Pareto table and plot per CPU kind, the chosen pair")
    add_common(table)
    table.add_argument("--min-speedup", type=float, default=Targets.speedup)
    table.add_argument("--min-share", type=float, default=Targets.share)
    table.add_argument("--batch", type=int, default=Targets.batch)
    table.add_argument("--min-seeds", type=int, default=Targets.seeds)
    gate = sub.add_parser("gate", help="the recipe's speed gate (TEST.GATES of --config-file)")
    add_timing(gate)
    gate.add_argument("--config-file", required=True)
    gate.add_argument("--int8", default="", help="a shipped INT8 file at deployment size (default: the config's "
                                                 "MODEL with random weights, quantized for QUANT.TARGETS[0])")
    gate.add_argument("--teacher-onnx", default="", help="the teacher's FP32 ONNX file (default: the architecture "
                                                         "of DISTILL.TEACHERS.CONFIGS[0], random weights)")
    gate.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE overrides of --config-file")
    args = parser.parse_args(argv)
    if hasattr(args, "calls") and len(args.calls) != len(args.batches):
        parser.error("--calls needs one number per --batches entry")
    return args


def entries_of(names: Sequence[str]) -> List[Entry]:
    return [parse_entry(name) for name in names]


def limits_of(args) -> StabilityLimits:
    return StabilityLimits(args.max_cv, args.max_median_over_min, args.min_cpu_share)


def run_speed(args) -> None:
    settings = SpeedSettings(tuple(args.size), tuple(args.batches), tuple(args.calls), args.rounds, args.threads,
                             tuple(args.runtimes), args.teacher_config, tuple(args.teacher_opts),
                             limits=limits_of(args))
    torch.set_num_threads(args.threads)
    records = speed_phase(entries_of(args.entries), settings, args.out, args.force)
    failed = [r["entry"] for r in records if r["status"] != "ok"]
    print(f"{len(records) - len(failed)} entries measured" + (f"; skipped: {', '.join(failed)}" if failed else ""))


def run_accuracy(args) -> None:
    settings = AccuracySettings(args.teachers, args.seeds, args.scale, args.opts, args.distill_opts)
    outcomes = accuracy_phase(entries_of(args.entries), settings, args.out, args.dry_run)
    for name, seeds in outcomes.items():
        print(f"{name}: " + ", ".join(f"s{seed} {outcome}" for seed, outcome in seeds.items()))


def accuracy_rows(entries: Sequence[Entry], out: str) -> Dict[str, List[dict]]:
    """Entry -> one row per seed folder found under OUT/accuracy/<entry>/."""
    rows = {}
    for entry in entries:
        folder = os.path.join(out, "accuracy", entry.name)
        seeds = sorted(int(d[1:]) for d in os.listdir(folder) if d[:1] == "s" and d[1:].isdigit()) \
            if os.path.isdir(folder) else []
        rows[entry.name] = [collect(entry, seed, out) for seed in seeds]
    return rows


def cached_macs(entries: Sequence[Entry], out: str) -> Dict[str, Dict[str, float]]:
    """MACs and ratios at both sizes per entry (OUT/macs.json caches them); an entry that cannot be built is left
    out (the speed phase reports why)."""
    path = os.path.join(out, "macs.json")
    cache = json.load(open(path, encoding="utf-8")) if os.path.isfile(path) else {}
    for entry in entries:
        if entry.name not in cache:
            try:
                cache[entry.name] = mac_ratios(entry)
            except Exception as exc:  # noqa: BLE001 - reported, the table goes on
                print(f"MACs of {entry.name} not counted: {type(exc).__name__}: {exc}")
    atomic_write_json(path, cache)
    return cache


def run_table(args) -> None:
    entries = entries_of(args.entries)
    targets = Targets(args.min_speedup, args.min_share, args.batch, args.min_seeds)
    speed = speed_records(args.out)
    accuracy = accuracy_rows(entries, args.out)
    macs = cached_macs(entries, args.out)
    kinds, batches = kinds_and_batches(speed)
    for kind in kinds or ["(no speed measured)"]:
        rows = build_rows([e.name for e in entries], speed.get(kind, {}), accuracy, macs, targets, batches)
        choice = choose(rows, targets)
        stem = os.path.join(args.out, f"pair_selection_{kind_slug(kind)}")
        text = markdown(rows, choice, targets, kind, batches)
        with open(f"{stem}.md", "w", encoding="utf-8") as handle:
            handle.write(text)
        atomic_write_json(f"{stem}.json", {"kind": kind, "targets": vars(targets), "rows": rows,
                                           "choice": vars(choice)})
        print(text)
        print(f"table: {stem}.md, rows: {stem}.json, plot: {plot(rows, choice, targets, kind, f'{stem}.png')}")
        if choice.chosen:
            print(recipe_lines(parse_entry(choice.chosen)))


def recipe_lines(entry: Entry) -> str:
    """The MODEL.BACKBONE overrides that put the chosen entry into the recipe configs."""
    def block(opts):
        return "\n".join(f"    {k.split('.')[-1]}: {v}" for k, v in zip(opts[::2], opts[1::2]))
    text = (f"recipe for {entry.name}: MODEL.BACKBONE of configs/synthetic/pair_distill.yml (synthetic scale):\n"
            f"{block(entry.model_opts(0.25))}\nand of configs/synthetic/pair_speed.yml and "
            f"configs/Market1501/pair_distill.yml (deployment):\n{block(entry.model_opts(1.0))}")
    if entry.prune:
        text += f"\nthen tools/prune.py PRUNE.RATIO {entry.prune} on the distilled run before quantizing"
    return text


def main(argv=None) -> None:
    args = parse_args(argv)
    setup_logging()
    if args.phase == "gate":
        from _pair_gate import run_gate

        return run_gate(args, limits_of(args))
    {"speed": run_speed, "accuracy": run_accuracy, "table": run_table}[args.phase](args)


if __name__ == "__main__":
    sys.exit(run_tool(main))
