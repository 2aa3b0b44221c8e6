"""The accuracy phase of benchmarks/pair_selection.py: for each ladder entry and seed, the shipped distillation recipe
from the teacher's run folder at the synthetic scale (tools/distill.py), tools/prune.py for pruned entries, then
INT8 in the portable target (tools/quantize.py). Every step runs in its own folder and is skipped when that folder
holds a finished run, so the phase continues where it stopped; an interrupted distillation resumes."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence

from compressreid.engine.run_dir import read_status

from _pair_ladder import SYNTHETIC_SCALE, Entry

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOOLS = {"distill": "tools/distill.py", "prune": "tools/prune.py", "quantize": "tools/quantize.py"}
CONFIGS = {"distill": "configs/synthetic/pair_ladder_distill.yml", "prune": "configs/synthetic/pair_ladder_prune.yml",
           "quantize": "configs/synthetic/pair_ladder_quant.yml"}
FINISHED = ("accepted", "rejected", "ungated")
USABLE = ("accepted", "ungated")  # what a later stage may read (tools refuse a rejected source)
INTERRUPTED = (130, 143)  # SIGINT, SIGTERM: the user stopped it; stop the phase too


@dataclass
class AccuracySettings:
    """How the ladder is trained.

    Attributes:
        teachers: teacher run folders (tools/train_teacher.py with configs/synthetic/bot_r50_ibn.yml); seed i
            distils from teachers[i % len(teachers)].
        seeds: student seeds (SEED: initialisation and sampling).
        scale: width factor at the synthetic size (the teacher's, 0.25).
        opts: KEY VALUE overrides for every step (e.g. MODEL.DEVICE cuda, or tiny data settings).
        distill_opts: KEY VALUE overrides for the distillation step only (e.g. SOLVER.MAX_EPOCH).
    """

    teachers: Sequence[str]
    seeds: Sequence[int] = (0, 1)
    scale: float = SYNTHETIC_SCALE
    opts: Sequence[str] = ()
    distill_opts: Sequence[str] = ()
    python: str = sys.executable


@dataclass
class Step:
    """One tool run of one entry and seed."""

    tool: str
    folder: str
    args: List[str] = field(default_factory=list)

    def state(self) -> str:
        """"done" (a finished run is there), "resume" (an interrupted distillation with a checkpoint) or "run"."""
        status = read_status(self.folder)
        if status in FINISHED and os.path.isfile(os.path.join(self.folder, "metrics.json")):
            return "done"
        if self.tool == "distill" and status in ("interrupted", "failed") and os.path.isfile(
                os.path.join(self.folder, "last_checkpoint.pth")):
            return "resume"
        return "run"

    def command(self, python: str, resume: bool = False) -> List[str]:
        # options go before the KEY VALUE overrides (argparse REMAINDER)
        return [python, os.path.join(REPO, TOOLS[self.tool]), *(["--resume"] if resume else []), *self.args]


def run_folder(out: str, entry: str, seed: int, tool: str) -> str:
    return os.path.join(out, "accuracy", entry, f"s{seed}", tool)


def entry_steps(entry: Entry, seed: int, out: str, settings: AccuracySettings) -> List[Step]:
    """distill (shared by an entry and its pruned variants) -> [prune] -> quantize."""
    teacher = settings.teachers[list(settings.seeds).index(seed) % len(settings.teachers)]
    model = entry.model_opts(settings.scale)
    common = [*model, *entry.train_opts(), "SEED", str(seed), "DISTILL.TEACHERS.CONFIGS", repr((teacher,)),
              "DISTILL.TEACHERS.WEIGHTS", "()", *settings.opts]
    distill = run_folder(out, entry.base.name, seed, "distill")
    steps = [Step("distill", distill, ["--config-file", CONFIGS["distill"], *common, *settings.distill_opts,
                                       "OUTPUT_DIR", distill])]
    source = distill
    if entry.prune:
        source = run_folder(out, entry.name, seed, "prune")
        steps.append(Step("prune", source, ["--config-file", CONFIGS["prune"], *common, "PRUNE.SOURCE", distill,
                                            "PRUNE.RATIO", str(entry.prune), "PRUNE.ROUND_TO",
                                            str(entry.round_to(settings.scale)), "OUTPUT_DIR", source]))
    quant = run_folder(out, entry.name, seed, "quantize")
    steps.append(Step("quantize", quant, ["--config-file", CONFIGS["quantize"], *common, "QUANT.SOURCE", source,
                                          "OUTPUT_DIR", quant]))
    return steps


def run_step(step: Step, python: str, log: Callable[[str], None], dry_run: bool = False) -> int:
    """Run one step unless it is done (output in ``<folder>.log``); returns the tool's exit code (0 when skipped)."""
    state = step.state()
    if state == "done":
        log(f"    {step.tool:8s} done before ({read_status(step.folder)}): {step.folder}")
        return 0 if read_status(step.folder) in USABLE else 3
    command = step.command(python, resume=state == "resume")
    log(f"    {step.tool:8s} {'would run' if dry_run else 'running'}{' (resume)' if state == 'resume' else ''}: "
        + shlex.join(command))
    if dry_run:
        return 0
    os.makedirs(os.path.dirname(step.folder), exist_ok=True)
    with open(f"{step.folder}.log", "a", encoding="utf-8") as handle:
        code = subprocess.call(command, cwd=REPO, stdout=handle, stderr=subprocess.STDOUT)
    log(f"    {step.tool:8s} exit {code}, status '{read_status(step.folder)}' (log: {step.folder}.log)")
    return code


def accuracy_phase(entries: Sequence[Entry], settings: AccuracySettings, out: str, dry_run: bool = False,
                   log: Callable[[str], None] = print) -> Dict[str, Dict[int, str]]:
    """Every entry x seed, in order; a step that fails is reported and the entry's later steps for that seed are
    skipped (other entries go on). Ctrl-C in a tool stops the phase. Returns entry -> seed -> outcome."""
    outcomes: Dict[str, Dict[int, str]] = {}
    for entry in entries:
        for seed in settings.seeds:
            log(f"  {entry.name} seed {seed}")
            try:
                steps = entry_steps(entry, seed, out, settings)
            except Exception as exc:  # noqa: BLE001 - an entry that cannot be built is reported and skipped
                outcomes.setdefault(entry.name, {})[seed] = f"skipped: {type(exc).__name__}: {exc}"
                log(f"    SKIPPED: cannot build the entry ({type(exc).__name__}: {exc})")
                continue
            outcomes.setdefault(entry.name, {})[seed] = run_steps(steps, settings, log, dry_run)
    return outcomes


def run_steps(steps: Sequence[Step], settings: AccuracySettings, log: Callable[[str], None], dry_run: bool) -> str:
    """One entry and seed, step after step; stops at the first step that leaves no usable run (what happened)."""
    for step in steps:
        code = run_step(step, settings.python, log, dry_run)
        if code in INTERRUPTED:
            raise KeyboardInterrupt(f"{step.tool} in {step.folder} was interrupted")
        status = read_status(step.folder)
        if not dry_run and status not in USABLE:
            outcome = f"{step.tool} {status or 'failed'} (exit {code})"
            log(f"    stopped here: {outcome}; see {step.folder}.log")
            return outcome
    return "would run" if dry_run else "done"


def _metrics(folder: str) -> Optional[Dict[str, object]]:
    path = os.path.join(folder, "metrics.json")
    if not os.path.isfile(path):
        return None
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)


def collect(entry: Entry, seed: int, out: str) -> Dict[str, object]:
    """What one entry and seed reached: teacher / student FP32 / pruned / INT8 mAP, the INT8 verdict, statuses."""
    distill = _metrics(run_folder(out, entry.base.name, seed, "distill")) or {}
    quant = _metrics(run_folder(out, entry.name, seed, "quantize")) or {}
    status = quant.get("status") or read_status(run_folder(out, entry.name, seed, "quantize"))
    distill_status = read_status(run_folder(out, entry.base.name, seed, "distill"))
    if not status and distill_status not in ("", "accepted"):  # the chain stopped before INT8: say where and why
        fp32 = distill.get("mAP")
        status = f"distill {distill_status}" + (f" (FP32 mAP {fp32:.1f})" if isinstance(fp32, (int, float)) else "")
    row: Dict[str, object] = {"entry": entry.name, "seed": seed,
                              "teacher_mAP": (distill.get("teacher") or {}).get("mAP"),
                              "fp32_mAP": distill.get("mAP"), "int8_mAP": quant.get("mAP"),
                              "int8_status": status or "missing"}
    if entry.prune:
        row["pruned_mAP"] = (_metrics(run_folder(out, entry.name, seed, "prune")) or {}).get("mAP")
    if isinstance(row["int8_mAP"], (int, float)) and isinstance(row["teacher_mAP"], (int, float)):
        row["share"] = row["int8_mAP"] / row["teacher_mAP"]
    return row
