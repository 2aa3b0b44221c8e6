"""Speed per runtime, side by side: FP32 and INT8 of one student and the FP32 teacher, in ONNX Runtime and OpenVINO.

    python benchmarks/runtime_speed.py                       # R18-IBN student vs R50-IBN teacher, 256x128, b1 and b32
    python benchmarks/runtime_speed.py --rounds 15 --calls 20 3 --json runtime_speed.json
    python benchmarks/runtime_speed.py --width 0.25 --no-teacher --size 64 32
    python benchmarks/runtime_speed.py --fp32 output/q/x/student_fp32.onnx --int8 output/q/x/student_int8.onnx

Latency does not depend on the weights, so the models are built from their configs with random weights (BN
statistics warmed on random images, so activation ranges look trained) and the student's INT8 file is made exactly
as the ort_portable target makes it (quantize_ptq in its format; calibration on random images). With nncf
installed, NNCF's own INT8 of the same FP32 file runs too; --ov-tuned adds our OpenVINO-tuned prototypes.
Runtimes: onnxruntime and openvino as our targets run a file (OpenVINO: one model with a dynamic batch), and
openvino-static (compiled per batch size with static shapes); on request openvino-static-default, the same with
OpenVINO's own precision for the float parts (bf16 on AMX CPUs: what a user gets without a hint). Every model x
runtime x batch cell is timed in one process, round-robin over several rounds, so drift of a shared machine falls
on all cells; ratios are the median over rounds of per-round ratios, of wall time and (in brackets) of process CPU
time, which a loaded machine disturbs less. Prints the CPU features, the table, the ratios; --json writes every
number and every sample.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from typing import Dict, List

import torch

from compressreid.config import load_config
from compressreid.export.cpu import this_machine
from compressreid.export.onnx_export import example_images, export_onnx
from compressreid.quant.targets import QUANT_TARGETS

import _bench
import _ov_tuned

STUDENT_FP32, STUDENT_INT8, STUDENT_NNCF, TEACHER = "student FP32", "student INT8", "student INT8 NNCF", "teacher FP32"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--student-config", default="configs/synthetic/student_r18_ibn.yml")
    parser.add_argument("--width", type=float, default=0.0,
                        help="MODEL.BACKBONE.WIDTH of the student (0: the config's own)")
    parser.add_argument("--teacher-config", default="configs/Market1501/bagtricks_R50-ibn.yml")
    parser.add_argument("--no-teacher", action="store_true")
    parser.add_argument("--fp32", default="", help="an FP32 student ONNX file instead of building one")
    parser.add_argument("--int8", default="", help="its INT8 file (e.g. a shipped student_int8.onnx)")
    parser.add_argument("--target", default="ort_portable", help="whose INT8 format the student is quantized in")
    parser.add_argument("--no-nncf", action="store_true", help="skip NNCF's INT8 even when nncf is installed")
    parser.add_argument("--ov-tuned", nargs="+", default=[], metavar="VARIANT",
                        help="also our OpenVINO-tuned prototype, one file per '+'-joined variant of "
                             f"{', '.join(_ov_tuned.VARIANTS)}")
    parser.add_argument("--cold-bn", action="store_true", help="keep default BN statistics (no warm-up)")
    parser.add_argument("--runtimes", nargs="+", default=list(_bench.RUNTIMES),
                        choices=_bench.RUNTIMES + _bench.OPT_IN_RUNTIMES,
                        help="openvino-static-default: OpenVINO's own precision for float parts (bf16 on AMX CPUs)")
    parser.add_argument("--size", type=int, nargs=2, default=[256, 128], metavar=("H", "W"))
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 32])
    parser.add_argument("--calls", type=int, nargs="+", default=[10, 2],
                        help="timed calls per cell per round, one number per --batches entry")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--calibration-images", type=int, default=32)
    parser.add_argument("--keep", default="", help="keep the ONNX files in this folder")
    parser.add_argument("--json", default="", help="also write every number here")
    args = parser.parse_args()
    if len(args.calls) != len(args.batches):
        parser.error("--calls needs one number per --batches entry")
    return args


def student_opts(cfg, width: float) -> List[str]:
    """The config override for the student's width: the config's own where 0 (the head reads the backbone's output
    channels, so MODEL.BACKBONE.FEAT_DIM, which only documents them, needs no override)."""
    return ["MODEL.BACKBONE.WIDTH", str(width or cfg.MODEL.BACKBONE.WIDTH)]


def student_files(args, folder: str) -> Dict[str, str]:
    """The student's FP32 file, its INT8 in the target's format and, when asked and installed, the peers."""
    size = args.size
    calibration = [example_images(size, 8, seed) for seed in range(max(1, args.calibration_images // 8))]
    cfg = load_config(args.student_config, [])
    if args.fp32:
        files = {STUDENT_FP32: args.fp32}
    else:
        model = _bench.build_random_model(args.student_config, size, student_opts(cfg, args.width),
                                          warm=not args.cold_bn)
        files = {STUDENT_FP32: export_onnx(model, os.path.join(folder, "student_fp32.onnx"), size)}
    fmt = QUANT_TARGETS.get(args.target).format_from_config(cfg.QUANT)
    files[STUDENT_INT8] = args.int8 or _bench.quantize_ours(files[STUDENT_FP32], os.path.join(folder, "int8.onnx"),
                                                            calibration, fmt)
    for i, text in enumerate(args.ov_tuned):
        files[f"{STUDENT_INT8} {text}"] = _ov_tuned.quantize_ov_tuned(
            files[STUDENT_FP32], os.path.join(folder, f"int8_ov{i}.onnx"), calibration, fmt,
            _ov_tuned.parse_variant(text))
    if not args.no_nncf and _bench.nncf_available():
        files[STUDENT_NNCF] = _bench.quantize_nncf(files[STUDENT_FP32], os.path.join(folder, "int8_nncf.onnx"),
                                                   _bench.single_images(calibration))
    return files


def time_cells(args, files: Dict[str, str]):
    """Interleaved samples per (model, runtime, batch)."""
    cells = {}
    for model, path in files.items():
        for runtime in args.runtimes:
            run = _bench.make_runner(path, runtime, args.threads)
            for batch, calls in zip(args.batches, args.calls):
                cells[(model, runtime, batch)] = (run, example_images(args.size, batch).numpy(), calls)
    return _bench.interleaved(cells, args.rounds)


def best_runtime(args, samples, model: str, batch: int, slowest: bool = False) -> str:
    """The fastest (or slowest) runtime for ``model`` at ``batch``, ranked by the paired wall-time ratio to the
    first runtime (the measure the ratio lines print, so the ranking and the printed factor agree)."""
    first = samples[(model, args.runtimes[0], batch)]
    ranked = sorted(args.runtimes, key=lambda rt: _bench.paired_ratio(samples[(model, rt, batch)], first))
    return ranked[-1] if slowest else ranked[0]


def ratio_lines(args, samples, models: List[str]) -> List[str]:
    """Paired speed-ups (wall time, and process CPU time in brackets): INT8 vs FP32 per runtime, vs the teacher,
    the other INT8 files vs ours, best runtime per model and batch."""
    lines, W = [], max(map(len, models))  # noqa: N806 - the name column's width

    def r(a, b) -> str:
        return (f"{_bench.paired_ratio(samples[a], samples[b]):5.2f}x "
                f"({_bench.paired_ratio(samples[a], samples[b], 'cpu'):4.2f}x)")
    int8s = [m for m in models if m.startswith("student INT8")]
    lines.append("speed-up of each INT8 over the FP32 student, same runtime (FP32 time / INT8 time):")
    for m in int8s:
        for rt in args.runtimes:
            lines.append(f"  {m:{W}s} {rt:15s} " + "  ".join(
                f"b{b} {r((STUDENT_FP32, rt, b), (m, rt, b))}" for b in args.batches))
    if TEACHER in models:
        lines.append("speed-up over the FP32 teacher in the same runtime, and in its fastest runtime per batch "
                     "(teacher time / student time):")
        fastest = {b: best_runtime(args, samples, TEACHER, b) for b in args.batches}
        for m in [STUDENT_FP32, *int8s]:
            for rt in args.runtimes:
                lines.append(f"  {m:{W}s} {rt:15s} " + "  ".join(
                    f"b{b} {r((TEACHER, rt, b), (m, rt, b))} best {r((TEACHER, fastest[b], b), (m, rt, b))}"
                    for b in args.batches))
    for other in [m for m in int8s if m != STUDENT_INT8]:
        lines.append(f"{other} vs ours (our time / its time; > 1: it is faster):")
        for rt in args.runtimes:
            lines.append(f"  {rt:15s} " + "  ".join(
                f"b{b} {r((STUDENT_INT8, rt, b), (other, rt, b))}" for b in args.batches))
    if len(args.runtimes) > 1:
        lines.append("best runtime per model and batch (factor over the slowest runtime):")
        for m in models:
            for b in args.batches:
                fast, slow = best_runtime(args, samples, m, b), best_runtime(args, samples, m, b, slowest=True)
                lines.append(f"  {m:{W}s} b{b:<3d} {fast:15s} {r((m, slow, b), (m, fast, b))} over {slow}")
    return lines


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory(prefix="runtime-speed-") as tmp:
        folder = args.keep or tmp
        os.makedirs(folder, exist_ok=True)
        files = student_files(args, folder)
        if not args.no_teacher:
            teacher = _bench.build_random_model(args.teacher_config, args.size, warm=not args.cold_bn)
            files[TEACHER] = export_onnx(teacher, os.path.join(folder, "teacher_fp32.onnx"), args.size)
        sizes = {m: round(os.path.getsize(p) / 2 ** 20, 2) for m, p in files.items()}
        samples = time_cells(args, files)
    models = list(files)
    machine = this_machine()
    flags = [f for f, present in machine["flags"].items() if present]
    print(f"CPU: {machine['processor']} ({machine['machine']}), kind: {machine['kind']}; flags: {' '.join(flags)}")
    print(f"input {args.size[0]}x{args.size[1]}, {args.threads} threads, {args.rounds} interleaved rounds, calls per "
          f"round {dict(zip(args.batches, args.calls))}; wall ms per call: median (min), cpu = process CPU ms per call")
    table = {f"{m} | {rt} | b{b}": _bench.summarize(samples[(m, rt, b)], b)
             for m in models for rt in args.runtimes for b in args.batches}
    W = max(map(len, models))
    print(f"{'model':{W}s} {'runtime':15s} {'MB':>6s} " + " ".join(f"{'b' + str(b) + ' ms':>19s} {'cpu':>7s}"
                                                              for b in args.batches) + f" {'img/s (largest b)':>17s}")
    for m in models:
        for rt in args.runtimes:
            cells = [table[f"{m} | {rt} | b{b}"] for b in args.batches]
            print(f"{m:{W}s} {rt:15s} {sizes[m]:6.2f} " + " ".join(
                f"{c['ms_p50']:9.2f} ({c['ms_min']:7.2f}) {c['cpu_ms_p50']:7.1f}" for c in cells)
                  + f" {cells[-1]['images_per_second']:17.1f}")
    lines = ratio_lines(args, samples, models)
    print("\n".join(lines))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump({"machine": machine, "args": vars(args), "size_mb": sizes, "cells": table, "ratios": lines,
                       "samples": {" | ".join(map(str, k)): v for k, v in samples.items()}}, handle, indent=1)


if __name__ == "__main__":
    main()
