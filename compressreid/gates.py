"""The one gate mechanism: rules written as data (TEST.GATES), parsed once into rule objects, validated before any
work against what a stage will report, and checked once on what it reported, for every test set; NaN fails.

A rule reads ``METRIC OP BOUND [on SET]`` with OP ``>=`` or ``<=`` and BOUND one of ``12.5`` (absolute),
``teacher`` / ``previous`` / any reference the stage offers, ``REF - 0.5`` (maximum drop in points), ``REF + 2``,
or ``0.95 * REF`` (fraction). Without ``on SET`` a rule applies to every test set (DATASETS.TESTS) and each must
pass. Examples: ``"mAP >= 40"``, ``"mAP >= previous - 0.5"``, ``"rank1 >= 0.9 * teacher on DukeMTMC"``.

This module sits below the stages (next to ``errors.py``): the stages compute, the runner and the tools judge.
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass, field
from typing import Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

from compressreid.errors import ConfigError, GateFailed

_NUMBER = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"
_NAME = r"[A-Za-z_][A-Za-z0-9_@.=\-]*"
_RULE = re.compile(rf"^\s*(?P<metric>{_NAME})\s*(?P<op>>=|<=)\s*(?P<bound>.+?)(?:\s+on\s+(?P<set>\S+))?\s*$")
_ABSOLUTE = re.compile(rf"^(?P<value>{_NUMBER})$")
_OFFSET = re.compile(rf"^(?P<ref>[A-Za-z_]\w*)(?:\s*(?P<sign>[-+])\s*(?P<value>{_NUMBER}))?$")
_FRACTION = re.compile(rf"^(?P<value>{_NUMBER})\s*\*\s*(?P<ref>[A-Za-z_]\w*)$")

# Statuses a judged run ends with: every rule passed, one failed, or no rule was configured at all.
ACCEPTED, REJECTED, UNGATED = "accepted", "rejected", "ungated"

# A stage's metrics as metrics.json holds them: the first test set's at the top level, every set under "datasets".
Payload = Mapping[str, object]


@dataclass(frozen=True)
class GateRule:
    """One parsed rule: threshold = factor * reference value + offset (offset alone when absolute)."""

    text: str
    metric: str
    op: str
    reference: Optional[str]
    factor: float = 1.0
    offset: float = 0.0
    dataset: Optional[str] = None  # None: every test set

    @classmethod
    def parse(cls, text: str) -> "GateRule":
        """Raises ConfigError for a rule that is not ``METRIC >= BOUND [on SET]`` or ``METRIC <= BOUND [on SET]``."""
        match = _RULE.match(str(text))
        if not match:
            raise ConfigError(f"gate rule '{text}' is not 'METRIC >= BOUND' or 'METRIC <= BOUND' (optionally "
                              "followed by 'on SET')")
        metric, op, bound, dataset = match["metric"], match["op"], match["bound"], match["set"]
        if m := _ABSOLUTE.match(bound):
            return cls(text, metric, op, None, 0.0, float(m["value"]), dataset)
        if m := _FRACTION.match(bound):
            return cls(text, metric, op, m["ref"], float(m["value"]), 0.0, dataset)
        if m := _OFFSET.match(bound):
            offset = float(m["value"] or 0.0) * (-1.0 if m["sign"] == "-" else 1.0)
            return cls(text, metric, op, m["ref"], 1.0, offset, dataset)
        raise ConfigError(
            f"gate rule '{text}': bound '{bound}' must be a number, REF, REF - N, REF + N or N * REF")


@dataclass
class GateDecision:
    """What a rule decided on one test set (and one judged item), recorded whether it passed or not."""

    rule: str
    metric: str
    op: str
    value: float
    threshold: float
    reference: Optional[str]
    reference_value: Optional[float]
    passed: bool
    scope: Optional[str] = None  # the judged item when a stage judges several (a quantization target)
    dataset: Optional[str] = None
    measured_on: Optional[str] = None  # what ``value`` was measured on when not the judged item itself

    def to_dict(self) -> Dict[str, object]:
        return asdict(self)

    def describe(self) -> str:
        where = " ".join(f"[{s}]" for s in (self.scope, self.dataset, self.measured_on) if s)
        if math.isnan(self.value) or math.isnan(self.threshold):
            return (f"{self.rule}{' ' + where if where else ''} (got {self.value:.4g}, needed {self.op} "
                    f"{self.threshold:.4g}: NaN never passes)")
        return f"{self.rule}{' ' + where if where else ''} (got {self.value:.4g}, needed {self.op} {self.threshold:.4g})"


def _numbers(values: Mapping[str, object]) -> Dict[str, float]:
    return {k: float(v) for k, v in values.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


def per_set(payload: Payload) -> Dict[str, Dict[str, float]]:
    """A metrics payload's numbers per test set. Each set's own numbers come first; numbers only at the top level
    (stage-level ones such as ``source_mAP_delta``) hold for every set."""
    top = _numbers(payload)
    datasets = payload.get("datasets") or {}
    if not datasets:
        return {str(payload.get("dataset", "")): top}
    return {name: {**top, **_numbers(values)} for name, values in datasets.items()}


@dataclass(frozen=True)
class GateSpec:
    """What a stage will report, known before it runs.

    Attributes:
        metrics: the metric names it reports (what TEST.GATES may name).
        references: each reference it offers -> the metric names that reference holds.
        datasets: its test sets (what ``on SET`` may name).
    """

    metrics: Tuple[str, ...]
    references: Dict[str, Tuple[str, ...]] = field(default_factory=dict)
    datasets: Tuple[str, ...] = ()
    reference_sets: Dict[str, Tuple[str, ...]] = field(default_factory=dict)  # a reference measured on these only

    def with_reference(self, name: str, metrics: Sequence[str]) -> "GateSpec":
        return GateSpec(self.metrics, {**self.references, name: tuple(metrics)}, self.datasets, self.reference_sets)


@dataclass(frozen=True)
class Measurement:
    """Metrics of the judged item measured another way, for the rules that name one reference: ``label`` says how
    (e.g. a quantized file's own Q/DQ semantics, where the runtime that judges it re-fuses the graph)."""

    label: str
    metrics: Payload


@dataclass
class Judged:
    """One thing a stage asks the gates to judge: its metrics, the references it offers, rules of its own.

    Attributes:
        scope: None for a stage's model; a name when a stage judges several things (quantization targets).
        metrics: its metrics.json-style payload (first test set at the top level, every set under "datasets").
        references: reference name -> payload of the same shape (per-set lookups fall back to the top level).
        rules: rules that always apply besides the stage's TEST.GATES (a target's certification, built-in checks).
        measured_for: reference name -> the measurement rules naming that reference read their metric from, on the
            test sets it holds (the others, and every other rule, read ``metrics``).
    """

    metrics: Payload
    references: Mapping[str, Payload] = field(default_factory=dict)
    rules: Sequence[str] = ()
    scope: Optional[str] = None
    measured_for: Mapping[str, Measurement] = field(default_factory=dict)


def _reference_value(reference: Payload, name: str, dataset: str, metric: str, where: str) -> float:
    sets = per_set(reference)
    values = sets.get(dataset) or next(iter(sets.values()), {})
    if metric not in values:
        raise ConfigError(f"{where}: reference '{name}' has no '{metric}'; it holds: "
                          f"{', '.join(sorted(values)) or '(nothing)'}")
    return float(values[metric])


class GateSet:
    """A stage's TEST.GATES, parsed once.

    Args:
        rules: the rule texts.
        where: what the rules belong to, for error messages (e.g. "stage 'distill'").
    """

    def __init__(self, rules: Iterable[str], where: str = "TEST.GATES"):
        self.where = where
        try:
            self.rules = [GateRule.parse(text) for text in rules]
        except ConfigError as exc:
            raise ConfigError(f"{where}: {exc}") from None

    def __bool__(self) -> bool:
        return bool(self.rules)

    def validate(self, metrics: Iterable[str], references: Mapping[str, Iterable[str]],
                 datasets: Sequence[str], reference_sets: Optional[Mapping[str, Sequence[str]]] = None) -> None:
        """Before any work: every rule names a metric the stage reports, a reference it offers (holding that
        metric) and, with ``on SET``, one of its test sets; a rule naming a reference measured on some test sets
        only applies to those.

        Args:
            metrics: the metric names the stage will report.
            references: each reference the stage will offer -> the metric names it holds.
            reference_sets: references measured on some test sets only -> those sets.

        Raises:
            ConfigError: one line naming the stage, the rule and the valid names.
        """
        metrics = set(metrics)
        for rule in self.rules:
            if rule.metric not in metrics:
                raise ConfigError(f"{self.where}: gate rule '{rule.text}' names metric '{rule.metric}', which this "
                                  f"stage does not report; valid: {', '.join(sorted(metrics))}")
            if rule.reference is not None:
                if rule.reference not in references:
                    valid = ", ".join(sorted(references)) or "(none)"
                    raise ConfigError(f"{self.where}: gate rule '{rule.text}' names reference '{rule.reference}'; "
                                      f"available: {valid}")
                held = set(references[rule.reference])
                if held and rule.metric not in held:
                    raise ConfigError(f"{self.where}: gate rule '{rule.text}': reference '{rule.reference}' has no "
                                      f"'{rule.metric}'; it holds: {', '.join(sorted(held))}")
            if rule.dataset is not None and rule.dataset not in datasets:
                raise ConfigError(f"{self.where}: gate rule '{rule.text}' names test set '{rule.dataset}'; this "
                                  f"stage evaluates: {', '.join(datasets) or '(none)'}")
            held_on = (reference_sets or {}).get(rule.reference)
            if held_on is not None and not set([rule.dataset] if rule.dataset else datasets) <= set(held_on):
                raise ConfigError(f"{self.where}: gate rule '{rule.text}' names reference '{rule.reference}', which "
                                  f"is measured on {', '.join(held_on)} only; add 'on {held_on[0]}' to the rule")

    def check(self, judged: Judged) -> List[GateDecision]:
        """Every rule (the stage's, then the item's own) on every test set it applies to."""
        rules = [*self.rules, *(GateRule.parse(text) for text in judged.rules)]
        sets = per_set(judged.metrics)
        measured = {name: (m.label, per_set(m.metrics)) for name, m in judged.measured_for.items()}
        decisions = []
        for rule in rules:
            label, other = measured.get(rule.reference, (None, {}))
            for dataset in ([rule.dataset] if rule.dataset else list(sets)):
                values = other.get(dataset)
                decision = _decide(rule, values if values is not None else sets.get(dataset, {}), judged, dataset,
                                   self.where)
                decision.measured_on = label if values is not None else None
                decisions.append(decision)
        return decisions


def _decide(rule: GateRule, values: Mapping[str, float], judged: Judged, dataset: str, where: str) -> GateDecision:
    if rule.metric not in values:
        raise ConfigError(f"{where}: gate rule '{rule.text}': metric '{rule.metric}' is not among the reported "
                          f"metrics{' of ' + dataset if dataset else ''}; available: "
                          f"{', '.join(sorted(values)) or '(none)'}")
    value = float(values[rule.metric])
    ref_value = None
    if rule.reference is not None:
        if rule.reference not in judged.references:
            raise ConfigError(f"{where}: gate rule '{rule.text}' names reference '{rule.reference}'; available: "
                              f"{', '.join(sorted(judged.references)) or '(none)'}")
        ref_value = _reference_value(judged.references[rule.reference], rule.reference, dataset, rule.metric, where)
    threshold = rule.offset + (rule.factor * ref_value if ref_value is not None else 0.0)
    # every comparison with NaN is False, so a NaN value or threshold fails whichever way the rule points
    passed = value >= threshold if rule.op == ">=" else value <= threshold
    return GateDecision(rule.text, rule.metric, rule.op, value, threshold, rule.reference, ref_value, bool(passed),
                        judged.scope, dataset if len(per_set(judged.metrics)) > 1 or rule.dataset else None)


def status_of(decisions: Sequence[GateDecision], gated: bool) -> str:
    """accepted / rejected / ungated: a stage with no configured rule is never accepted, even when its built-in
    checks pass (a failed built-in check still rejects it)."""
    if any(not d.passed for d in decisions):
        return REJECTED
    return ACCEPTED if gated else UNGATED


def raise_if_failed(decisions: Sequence[GateDecision], stage: str) -> None:
    """Raise ``GateFailed`` naming every failed rule of ``stage``."""
    failed = [d for d in decisions if not d.passed]
    if failed:
        detail = "; ".join(d.describe() for d in failed)
        raise GateFailed(f"{stage}: {len(failed)} gate(s) failed: {detail}", decisions)


def check_gates(rules: Iterable[str], metrics: Payload,
                references: Optional[Mapping[str, Payload]] = None) -> List[GateDecision]:
    """``rules`` on one payload with ``references``: the same check as ``GateSet.check`` (no built-in rules)."""
    return GateSet(rules).check(Judged(metrics, dict(references or {})))
