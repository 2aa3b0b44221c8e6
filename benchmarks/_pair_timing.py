"""Paired speed-ups of an INT8 student over the FP32 teacher from interleaved timing samples, whether the timing was
stable enough to decide anything, and the speed gate that refuses to pass on unstable timing.

Samples are what benchmarks/_bench.py:interleaved returns per cell: ``{"wall": [[ms per call] per round], "cpu":
...}``. Every round times every cell back to back, so load from other jobs falls on teacher and student alike; what
it does not cancel shows up as (a) per-round speed-up ratios that disagree with each other and (b) calls far slower
than the fastest call of the same cell. Both are measured here and bound the decision.
"""

from __future__ import annotations

import math
import re
import statistics
from dataclasses import asdict, dataclass, field
from typing import Dict, List, Mapping, Sequence

from compressreid.errors import GateFailed
from compressreid.gates import GateDecision, GateSet, Judged, raise_if_failed

Samples = Mapping[str, Sequence[Sequence[float]]]


@dataclass(frozen=True)
class StabilityLimits:
    """When timing counts as stable.

    Attributes:
        max_ratio_cv: largest coefficient of variation (std / mean) of the per-round speed-up ratios. On an idle
            machine the rounds agree within a few percent; a neighbour's burst that lands on one cell of a round
            moves that round's ratio by tens of percent.
        max_median_over_min: largest median / fastest call of any timed cell; a quiet cell stays within ~10-20 %
            of its best call, a descheduled one does not.
        min_cpu_share: smallest process CPU time per call / (threads x wall time) of any timed cell. A runtime that
            has its cores keeps its threads busy (ONNX Runtime spins between ops); when other jobs take the cores the
            share falls, and it falls on small fast models more than on big ones (more ops, more barriers), which
            biases the ratio even when rounds agree: measured on this 2-core machine under load ~8, every b32 cell at
            0.33 and R18-IBN 1/2 vs R50-IBN ORT-vs-ORT at 10.6x against 19x on the idle machine (README).
        min_rounds: fewer rounds cannot show whether they agree.
    """

    max_ratio_cv: float = 0.10
    max_median_over_min: float = 1.30
    min_cpu_share: float = 0.60
    min_rounds: int = 3


@dataclass
class Stability:
    """The verdict on one paired measurement, with the numbers and reasons behind it."""

    stable: bool
    rounds: int
    ratio_cv: float
    median_over_min: float
    cpu_share: float
    reasons: List[str] = field(default_factory=list)

    def to_dict(self) -> Dict[str, object]:
        return asdict(self)


def round_medians(samples: Samples, key: str = "wall") -> List[float]:
    """The median call of each round."""
    return [statistics.median(row) for row in samples[key]]


def paired_ratios(slow: Samples, fast: Samples, key: str = "wall") -> List[float]:
    """Per round: (median call of ``slow``) / (median call of ``fast``); > 1 means ``fast`` is faster."""
    return [a / b for a, b in zip(round_medians(slow, key), round_medians(fast, key))]


def median_over_min(samples: Samples, key: str = "wall") -> float:
    """Median over every call of every round divided by the fastest call."""
    calls = [v for row in samples[key] for v in row]
    return statistics.median(calls) / min(calls) if calls and min(calls) > 0 else math.nan


def cpu_share(samples: Samples, threads: int) -> float:
    """Median over calls of process CPU time / (``threads`` x wall time): about 1 when the runtime had its cores."""
    shares = [c / (threads * w) for cr, wr in zip(samples["cpu"], samples["wall"]) for c, w in zip(cr, wr) if w > 0]
    return statistics.median(shares) if shares else math.nan


def coefficient_of_variation(values: Sequence[float]) -> float:
    if len(values) < 2:
        return math.nan
    mean = statistics.fmean(values)
    return statistics.pstdev(values) / mean if mean > 0 else math.nan


def assess(ratios: Sequence[float], cells: Sequence[Samples], threads: int,
           limits: StabilityLimits = StabilityLimits()) -> Stability:
    """Stable when there are enough rounds, the per-round ratios agree (CV), no cell strays from its best call and
    every cell kept its ``threads`` busy (CPU share).

    NaN anywhere is unstable: a measurement that cannot be summarised cannot pass a gate.
    """
    cv = coefficient_of_variation(ratios)
    spread = max((median_over_min(c) for c in cells), default=math.nan)
    share = min((cpu_share(c, threads) for c in cells), default=math.nan)
    reasons = []
    if len(ratios) < limits.min_rounds:
        reasons.append(f"only {len(ratios)} round(s); at least {limits.min_rounds} are needed to see whether they "
                       "agree")
    if not cv <= limits.max_ratio_cv:
        reasons.append(f"per-round speed-up ratios vary by CV {cv:.3f} > {limits.max_ratio_cv}")
    if not spread <= limits.max_median_over_min:
        reasons.append(f"median call {spread:.2f}x the fastest call of the same model > {limits.max_median_over_min}")
    if not share >= limits.min_cpu_share:
        reasons.append(f"the runtimes got {share:.2f} of their {threads} thread(s) of CPU time < "
                       f"{limits.min_cpu_share} "
                       "(other jobs hold the cores)")
    return Stability(not reasons, len(ratios), round(cv, 4), round(spread, 3), round(share, 3), reasons)


def speedup_metrics(teacher: Samples, student: Samples, batch: int, threads: int,
                    limits: StabilityLimits = StabilityLimits()) -> Dict[str, float]:
    """The gate's numbers at one batch: ``speedup_vs_teacher_b{n}`` (median of the per-round ratios),
    ``..._low`` (the slowest round: what a neighbour's load could have made it), the stability numbers, and
    ``timing_stable_b{n}`` (1 or 0)."""
    ratios = paired_ratios(teacher, student)
    verdict = assess(ratios, [teacher, student], threads, limits)
    b = f"b{batch}"
    return {f"speedup_vs_teacher_{b}": round(statistics.median(ratios), 3) if ratios else math.nan,
            f"speedup_vs_teacher_{b}_low": round(min(ratios), 3) if ratios else math.nan,
            f"timing_ratio_cv_{b}": verdict.ratio_cv, f"timing_median_over_min_{b}": verdict.median_over_min,
            f"timing_cpu_share_{b}": verdict.cpu_share, f"timing_rounds_{b}": float(verdict.rounds),
            f"timing_stable_{b}": float(verdict.stable)}


_BATCH = re.compile(r"^speedup_vs_teacher_b(\d+)")


def stability_rules(rules: Sequence[str], limits: StabilityLimits) -> List[str]:
    """Built-in rules for every batch a speed rule names: its timing must be stable (as the collapse check is
    built into every accuracy verdict)."""
    batches = sorted({int(m[1]) for m in (_BATCH.match(r.strip()) for r in rules) if m})
    return [rule for b in batches for rule in (f"timing_rounds_b{b} >= {limits.min_rounds}",
                                               f"timing_ratio_cv_b{b} <= {limits.max_ratio_cv}",
                                               f"timing_median_over_min_b{b} <= {limits.max_median_over_min}",
                                               f"timing_cpu_share_b{b} >= {limits.min_cpu_share}")]


def judge_speed(rules: Sequence[str], metrics: Mapping[str, float], limits: StabilityLimits = StabilityLimits(),
                where: str = "speed gate") -> List[GateDecision]:
    """Check speed rules (TEST.GATES syntax) on ``metrics``; returns every decision when all pass.

    Raises:
        ConfigError: a rule naming a metric that was not measured (before anything is judged).
        GateFailed: timing was unstable for a batch a rule names (the message says so and that the speed-up was
            not decided), or a rule failed.
    """
    gates = GateSet(rules, where)
    gates.validate(metrics.keys(), {}, ())
    decisions = gates.check(Judged(dict(metrics), rules=stability_rules(rules, limits)))
    unstable = [d for d in decisions if d.metric.startswith("timing_") and not d.passed]
    if unstable:
        detail = "; ".join(d.describe() for d in unstable)
        raise GateFailed(f"{where}: timing on this machine is UNSTABLE ({detail}), so the speed-up was not decided "
                         "and the gate fails rather than pass by luck. Rerun with nothing else on the CPU (see "
                         "`uptime`), more rounds, or on the deployment machine.", decisions)
    raise_if_failed(decisions, where)
    return decisions
