"""The bookkeeping of benchmarks/gpu_check.py: each step timed and recorded as ok / failed / skipped, the tools run
as subprocesses with their logs kept, their metrics read back, and the JSON + markdown report."""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
import traceback
from dataclasses import asdict, dataclass, field
from typing import Callable, Dict, List, Mapping, Optional, Sequence

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OK, FAILED, SKIPPED = "ok", "failed", "skipped"


class Skip(Exception):
    """Raised by a step that cannot run here (no CUDA, a package missing, a step it needs failed): the reason."""


class StepError(Exception):
    """A step's own failure, one line (a tool's exit code and error line)."""


@dataclass
class StepResult:
    """One step of the check: its status, wall-clock seconds, the reason it failed or was skipped, its numbers."""

    name: str
    status: str
    seconds: float
    reason: str = ""
    metrics: Dict[str, object] = field(default_factory=dict)
    notes: List[str] = field(default_factory=list)


class Steps:
    """Runs steps in order; a step that raises is recorded and the next one still runs."""

    def __init__(self, selected: Optional[Sequence[str]] = None, echo: Callable[[str], None] = print,
                 after_step: Callable[[], object] = lambda: None):
        self.results: List[StepResult] = []
        self.selected, self.echo, self.after_step = selected, echo, after_step

    def run(self, name: str, body: Callable[[StepResult], None], needs: Sequence[str] = ()) -> StepResult:
        """``body`` fills the result's metrics and notes; Skip marks it skipped, any other error failed. A step
        whose ``needs`` did not all pass is skipped."""
        result = StepResult(name, OK, 0.0)
        start = time.perf_counter()
        try:
            if self.selected is not None and name not in self.selected:
                raise Skip("not selected (--steps)")
            self.need(*needs)
            body(result)
        except Skip as exc:
            result.status, result.reason = SKIPPED, str(exc)
        except Exception as exc:  # noqa: BLE001 - a failed step is recorded, the check goes on
            result.status, result.reason = FAILED, first_line(exc)
            if not isinstance(exc, StepError):  # a tool's failure is in its log; a bug here needs the traceback
                result.notes.append("".join(traceback.format_exception(exc)[-3:]).strip()[-1500:])
        result.seconds = round(time.perf_counter() - start, 2)
        self.results.append(result)
        self.echo(f"[gpu_check] {name}: {result.status}{f' ({result.reason})' if result.reason else ''} "
                  f"in {result.seconds:.1f} s")
        self.after_step()
        return result

    def status(self, name: str) -> str:
        return next((r.status for r in self.results if r.name == name), "")

    def need(self, *names: str) -> None:
        """Skip the calling step unless every named step passed."""
        for name in names:
            if self.status(name) != OK:
                raise Skip(f"needs step {name} ({self.status(name) or 'not run'})")

    @property
    def passed(self) -> bool:
        return all(r.status != FAILED for r in self.results)


def first_line(exc: BaseException) -> str:
    """The error on one line; a StepError is already worded for the report."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    if isinstance(exc, StepError) and text:
        return text
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


# ---- the tools as subprocesses ------------------------------------------------------------------------------------
def tool(name: str) -> str:
    return os.path.join(REPO, "tools", name)


def config(*parts: str) -> str:
    return os.path.join(REPO, "configs", *parts)


def run_command(command: Sequence[str], log_path: str, env: Mapping[str, str], timeout_s: float) -> str:
    """Run ``command`` with its output in ``log_path``; returns the output.

    Raises:
        StepError: a non-zero exit (with the tool's error line) or the timeout.
    """
    os.makedirs(os.path.dirname(log_path), exist_ok=True)
    with open(log_path, "w", encoding="utf-8") as log:
        log.write("$ " + " ".join(command) + "\n")
        log.flush()
        try:
            code = subprocess.run(list(command), stdout=log, stderr=subprocess.STDOUT, env=dict(env), cwd=REPO,
                                  timeout=timeout_s).returncode
        except subprocess.TimeoutExpired:
            code = None
    with open(log_path, "r", encoding="utf-8", errors="replace") as log:
        text = log.read()
    if code is None:
        raise StepError(f"timed out after {timeout_s:.0f} s (log: {log_path})")
    if code != 0:
        raise StepError(f"exit {code}: {error_line(text)} (log: {log_path})")
    return text


_TOOL_ERROR = re.compile(r"^(error|gate failed|interrupted): .*")
_EXCEPTION = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|Failed|Interrupted)\b.*")


def error_line(output: str) -> str:
    """What went wrong, on one line: the tool's own ``error:`` line, else a traceback's last line, else the last
    line of output."""
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    for pattern in (_TOOL_ERROR, _EXCEPTION):
        found = [line for line in lines if pattern.match(line)]
        if found:
            return found[-1][:300]
    return lines[-1][:300] if lines else "no output"


_THROUGHPUT = re.compile(r"training throughput: ([\d.]+) images/s \(([\d.]+) s/iteration")
_MAP = re.compile(r"INFO \S+: (\S+) on \S+: mAP ([\d.]+)\s+Rank-1 ([\d.]+)")


def run_metrics(folder: str, log_text: str = "") -> Dict[str, object]:
    """A run folder's metrics.json; when a tool wrote none, the numbers its log printed (mAP per model, training
    throughput)."""
    path = os.path.join(folder, "metrics.json")
    if os.path.isfile(path):
        with open(path, "r", encoding="utf-8") as handle:
            return json.load(handle)
    found: Dict[str, object] = {}
    for label, mAP, rank1 in _MAP.findall(log_text):
        target = found if not found else found.setdefault(label, {})
        target.update({"mAP": float(mAP), "rank1": float(rank1)})
    match = _THROUGHPUT.search(log_text)
    if match:
        found.update({"train_images_per_second": float(match.group(1)),
                      "train_seconds_per_iter": float(match.group(2))})
    return found


def pick(metrics: Mapping[str, object], *keys: str) -> Dict[str, object]:
    """The named scalar entries of ``metrics`` that are present, rounded for the report."""
    out = {}
    for key in keys:
        value = metrics.get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            out[key] = round(float(value), 4)
        elif isinstance(value, (str, bool)):
            out[key] = value
    return out


# ---- the report --------------------------------------------------------------------------------------------------
# The numbers the markdown table shows per step (all of them are in the JSON).
TABLE_KEYS = ("mAP", "teacher_mAP", "steps_per_second", "train_images_per_second", "amp_active", "int8_mAP",
              "fake_quant_mAP", "fp32_mAP", "world_size", "backend", "all_reduce_ok", "trt_int8_mAP", "qdq_int8_mAP",
              "cosine_mean", "cosine_min", "teacher_fp16_mAP", "speedup_b1", "speedup_b32", "teacher_iters",
              "student_iters")


def render_markdown(report: Mapping[str, object]) -> str:
    env = report["environment"]
    versions = ", ".join(f"{k} {v}" for k, v in env["versions"].items())
    verdict = "PASSED" if report["passed"] else "FAILED"
    if not report.get("complete", True):
        verdict = f"INCOMPLETE ({len(report['steps'])} step(s) so far, {'none' if report['passed'] else 'some'} failed)"
    lines = [f"# gpu_check: {verdict}", "",
             f"device: {env['device_name']} ({report['options']['device']}"
             f"{', tiny' if report['options']['tiny'] else ''}); {versions}", "",
             "| step | status | seconds | numbers / reason |", "| --- | --- | ---: | --- |"]
    for step in report["steps"]:
        numbers = ", ".join(f"{k} {_fmt(step['metrics'][k])}" for k in TABLE_KEYS if k in step["metrics"])
        latency = step["metrics"].get("latency_ms")
        if isinstance(latency, dict):
            numbers += "; " + ", ".join(f"{k} {v}" for k, v in latency.items())
        detail = numbers if step["status"] == OK else "; ".join(x for x in (step["reason"], numbers) if x)
        lines.append(f"| {step['name']} | {step['status']} | {step['seconds']:.1f} | {detail.replace('|', '/')} |")
    lines.append(f"\ntotal {report['total_seconds']:.1f} s")
    return "\n".join(lines) + "\n"


def _fmt(value: object) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def write_report(out_dir: str, report: Dict[str, object]) -> str:
    """DIR/gpu_check.json and DIR/gpu_check.md; returns the markdown."""
    report = {**report, "steps": [asdict(r) if isinstance(r, StepResult) else r for r in report["steps"]]}
    with open(os.path.join(out_dir, "gpu_check.json"), "w", encoding="utf-8") as handle:
        json.dump(report, handle, indent=2, default=str)
    markdown = render_markdown(report)
    with open(os.path.join(out_dir, "gpu_check.md"), "w", encoding="utf-8") as handle:
        handle.write(markdown)
    return markdown

