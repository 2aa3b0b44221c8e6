"""The speed phase of benchmarks/pair_selection.py: each ladder entry's INT8 student (ort_portable format, random
weights) timed against the FP32 teacher at deployment size, interleaved in one process, every runtime; the best
runtime per model and batch; paired speed-ups with their stability. One JSON per entry and CPU kind, reused when
its settings match (so a long run continues where it stopped)."""

from __future__ import annotations

import json
import os
import re
import tempfile
import time
from dataclasses import asdict, dataclass, field, replace
from typing import Callable, Dict, List, Optional, Sequence, Tuple

from compressreid.config import get_cfg
from compressreid.engine.io import atomic_write_json
from compressreid.export.cpu import this_machine
from compressreid.export.onnx_export import example_images, export_onnx
from compressreid.prune.adapter import count_macs_params
from compressreid.quant.targets import QUANT_TARGETS

import _bench
from _pair_ladder import DEPLOY_SIZE, TEACHER_DEPLOY, Entry, build_student, build_teacher
from _pair_timing import StabilityLimits, speedup_metrics

TEACHER, STUDENT = "teacher FP32", "student INT8"
RUNTIMES = ("onnxruntime", "openvino-static")  # ORT as our targets run it; OpenVINO compiled per batch (static)


@dataclass
class SpeedSettings:
    """What one speed measurement is; a stored result is reused only when these match."""

    size: Tuple[int, int] = DEPLOY_SIZE
    batches: Tuple[int, ...] = (1, 32)
    calls: Tuple[int, ...] = (10, 2)  # timed calls per cell per round, one per batch
    rounds: int = 7
    threads: int = 2
    runtimes: Tuple[str, ...] = RUNTIMES
    teacher_config: str = TEACHER_DEPLOY
    teacher_opts: Tuple[str, ...] = ()
    target: str = "ort_portable"
    calibration_images: int = 32
    limits: StabilityLimits = field(default_factory=StabilityLimits)

    def fingerprint(self) -> Dict[str, object]:
        return json.loads(json.dumps(asdict(self)))


def kind_slug(kind: str) -> str:
    """A folder name for a CPU kind ("x86-64 AVX2 (no VNNI)" -> "x86-64-avx2-no-vnni")."""
    return re.sub(r"[^a-z0-9]+", "-", kind.lower()).strip("-")


def result_path(out: str, kind: str, entry: str) -> str:
    return os.path.join(out, "speed", kind_slug(kind), f"{entry}.json")


def machine_line(machine: Dict[str, object]) -> str:
    flags = " ".join(f for f, present in machine["flags"].items() if present) or "(none recorded)"
    return f"CPU: {machine['processor']} ({machine['machine']}), kind: {machine['kind']}; flags: {flags}"


def available_runtimes(requested: Sequence[str]) -> Tuple[List[str], Dict[str, str]]:
    """The requested runtimes this machine has, and why the others are left out."""
    have, missing = [], {}
    for runtime in requested:
        if runtime.startswith("openvino") and not openvino_installed():
            missing[runtime] = "openvino is not installed (pip install 'compressreid[openvino]')"
        else:
            have.append(runtime)
    return have, missing


def openvino_installed() -> bool:
    try:
        import openvino  # noqa: F401
    except ImportError:
        return False
    return True


def make_runners(path: str, settings: SpeedSettings) -> Tuple[Dict[str, Callable], Dict[str, str]]:
    """A runner per runtime that loads ``path`` and runs it once at every batch (OpenVINO compiles per batch on first
    use, so a file it cannot compile fails here), and the errors of the runtimes that cannot."""
    runners, errors = {}, {}
    for runtime in settings.runtimes:
        try:
            run = _bench.make_runner(path, runtime, settings.threads)
            for batch in settings.batches:
                run(example_images(settings.size, batch).numpy())
            runners[runtime] = run
        except Exception as exc:  # noqa: BLE001 - a runtime that cannot take the file is reported, not fatal
            errors[runtime] = one_line(exc)
    return runners, errors


def one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"


class Teacher:
    """The FP32 teacher's file and runners, built once per process and timed again beside every entry.

    Args:
        path: the teacher's FP32 ONNX file at ``settings.size``; empty: its architecture from
            ``settings.teacher_config`` with random weights, exported into ``folder``.
    """

    def __init__(self, settings: SpeedSettings, folder: str, path: str = ""):
        self.counts: Dict[str, int] = {}
        if not path:
            model = build_teacher(settings.teacher_config, settings.size, settings.teacher_opts)
            self.counts = count_macs_params(model, settings.size)
            path = export_onnx(model, os.path.join(folder, "teacher_fp32.onnx"), settings.size)
        self.path = path
        self.runners, self.errors = make_runners(path, settings)
        if not self.runners:
            raise RuntimeError(f"no runtime can run the teacher: {self.errors}")


def student_file(entry: Entry, settings: SpeedSettings, folder: str) -> Tuple[str, Dict[str, int]]:
    """The entry's INT8 file in the target's format (random weights, warmed BN, calibration on random images), with
    its MACs and parameters.

    Raises:
        EntryFailed: building, exporting or quantizing failed (the stage and the error, for the report).
    """
    stage = "build"
    try:
        model = build_student(entry, settings.size)
        counts = count_macs_params(model, settings.size)
        stage = "export"
        fp32 = export_onnx(model, os.path.join(folder, f"{entry.name}_fp32.onnx"), settings.size)
        stage = "quantize"
        fmt = QUANT_TARGETS.get(settings.target).from_config(get_cfg()).fmt
        batches = max(1, settings.calibration_images // 8)
        calibration = [example_images(settings.size, 8, seed) for seed in range(batches)]
        int8 = _bench.quantize_ours(fp32, os.path.join(folder, f"{entry.name}_int8.onnx"), calibration, fmt)
    except Exception as exc:
        raise EntryFailed(stage, exc) from exc
    return int8, counts


class EntryFailed(Exception):
    """An entry that could not be built, exported, quantized, run or timed (reported and skipped)."""

    def __init__(self, stage: str, error: BaseException):
        super().__init__(f"{stage} failed: {one_line(error)}")
        self.stage = stage


def time_pair(teacher: Dict[str, Callable], student: Dict[str, Callable], settings: SpeedSettings):
    """Interleaved samples per (model, runtime, batch), teacher and student cells in every round."""
    cells = {}
    for model, runners in ((TEACHER, teacher), (STUDENT, student)):
        for runtime, run in runners.items():
            for batch, calls in zip(settings.batches, settings.calls):
                cells[(model, runtime, batch)] = (run, example_images(settings.size, batch).numpy(), calls)
    return _bench.interleaved(cells, settings.rounds)


def summarize_pair(samples, settings: SpeedSettings, runtimes: Dict[str, List[str]]) -> Dict[str, object]:
    """Per batch: each model's best runtime (median call), the paired speed-up of the student in its best runtime over
    the teacher in its best, its stability numbers, and the same-runtime speed-ups."""
    out: Dict[str, object] = {"cells": {}, "best_runtime": {}, "speedup": {}, "same_runtime_speedup": {}}
    for batch in settings.batches:
        for model in (TEACHER, STUDENT):
            for runtime in runtimes[model]:
                out["cells"][f"{model} | {runtime} | b{batch}"] = _bench.summarize(samples[(model, runtime, batch)],
                                                                                    batch)
        best = {m: min(runtimes[m], key=lambda rt: out["cells"][f"{m} | {rt} | b{batch}"]["ms_p50"])
                for m in (TEACHER, STUDENT)}
        out["best_runtime"][f"b{batch}"] = best
        out["speedup"][f"b{batch}"] = speedup_metrics(samples[(TEACHER, best[TEACHER], batch)],
                                                      samples[(STUDENT, best[STUDENT], batch)], batch, settings.threads,
                                                      settings.limits)
        out["same_runtime_speedup"][f"b{batch}"] = {
            rt: round(_bench.paired_ratio(samples[(TEACHER, rt, batch)], samples[(STUDENT, rt, batch)]), 3)
            for rt in runtimes[TEACHER] if rt in runtimes[STUDENT]}
    return out


def measure_pair(teacher: Teacher, student_path: str, settings: SpeedSettings) -> Dict[str, object]:
    """Time the teacher and one INT8 file interleaved in every runtime both load; the summary of summarize_pair.

    Raises:
        EntryFailed: no runtime can run the INT8 file, or one failed while timed.
    """
    runners, errors = make_runners(student_path, settings)
    if not runners:
        raise EntryFailed("runtime", RuntimeError(f"no runtime can run the INT8 file: {errors}"))
    try:
        samples = time_pair(teacher.runners, runners, settings)
    except Exception as exc:  # noqa: BLE001 - a runtime failing mid-measurement skips the entry, not the ladder
        raise EntryFailed("timing", exc) from exc
    summary = summarize_pair(samples, settings, {TEACHER: list(teacher.runners), STUDENT: list(runners)})
    return {**summary, "runtime_errors": {**teacher.errors, **errors},
            "samples": {" | ".join(map(str, k)): v for k, v in samples.items()}}


def measure_entry(entry: Entry, teacher_of: Callable[[], Teacher], settings: SpeedSettings,
                  folder: str) -> Dict[str, object]:
    """One entry's record: status "ok" with its numbers, or "failed" with the stage and the error.

    ``teacher_of()`` returns the shared teacher (built on first use: an entry that fails to build never waits for it).
    """
    start = time.time()
    record: Dict[str, object] = {"entry": entry.name, "settings": settings.fingerprint(), "machine": this_machine()}
    try:
        int8, counts = student_file(entry, settings, folder)
        teacher = teacher_of()
        summary = measure_pair(teacher, int8, settings)
    except EntryFailed as exc:
        return {**record, "status": "failed", "stage": exc.stage, "error": str(exc),
                "seconds": round(time.time() - start, 1)}
    return {**record, "status": "ok", **summary, "student_macs": counts["macs"], "student_params": counts["params"],
            "teacher_macs": teacher.counts["macs"], "mac_ratio": counts["macs"] / teacher.counts["macs"],
            "int8_size_mb": round(os.path.getsize(int8) / 2**20, 2), "seconds": round(time.time() - start, 1)}


def stored(path: str, settings: SpeedSettings) -> Optional[Dict[str, object]]:
    """A finished record measured with the same settings, or None."""
    if not os.path.isfile(path):
        return None
    with open(path, encoding="utf-8") as handle:
        record = json.load(handle)
    return record if record.get("status") == "ok" and record.get("settings") == settings.fingerprint() else None


def entry_line(record: Dict[str, object]) -> str:
    """One printed line per entry."""
    if record["status"] != "ok":
        return f"  {record['entry']:18s} SKIPPED ({record['error']})"
    parts = []
    for b, s in record["speedup"].items():
        best = record["best_runtime"][b]
        n = b[1:]
        parts.append(f"{b} {s[f'speedup_vs_teacher_b{n}']:6.2f}x (low {s[f'speedup_vs_teacher_b{n}_low']:.2f}, "
                     f"CV {s[f'timing_ratio_cv_b{n}']:.3f}, median/min {s[f'timing_median_over_min_b{n}']:.2f}, CPU "
                     f"share {s[f'timing_cpu_share_b{n}']:.2f}, "
                     f"{'stable' if s[f'timing_stable_b{n}'] else 'UNSTABLE'}; "
                     f"student {best[STUDENT]}, teacher {best[TEACHER]})")
    return f"  {record['entry']:18s} MACs {record['mac_ratio']:.3f} of the teacher's; " + "; ".join(parts)


def speed_phase(entries: Sequence[Entry], settings: SpeedSettings, out: str, force: bool = False,
                log: Callable[[str], None] = print) -> List[Dict[str, object]]:
    """Measure every entry not already measured with these settings on this CPU kind; returns every record."""
    machine = this_machine()
    log(machine_line(machine))
    runtimes, missing = available_runtimes(settings.runtimes)
    for runtime, why in missing.items():
        log(f"runtime {runtime} left out: {why}")
    settings = replace(settings, runtimes=tuple(runtimes))
    log(f"input {settings.size[0]}x{settings.size[1]}, {settings.threads} threads, {settings.rounds} interleaved "
        f"rounds, calls per round {dict(zip(settings.batches, settings.calls))}, runtimes {', '.join(runtimes)}; "
        "speed-up = teacher FP32 (best runtime) / student INT8 (best runtime), median of per-round ratios")
    records, teacher = [], []
    with tempfile.TemporaryDirectory(prefix="pair-speed-") as folder:

        def teacher_of() -> Teacher:
            if not teacher:
                teacher.append(Teacher(settings, folder))
            return teacher[0]

        for entry in entries:
            path = result_path(out, str(machine["kind"]), entry.name)
            record = None if force else stored(path, settings)
            if record is None:
                record = measure_entry(entry, teacher_of, settings, folder)
                atomic_write_json(path, record)
            else:
                log(f"  {entry.name:18s} (measured before: {path})")
            log(entry_line(record))
            records.append(record)
    return records
