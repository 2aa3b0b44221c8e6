"""The one gate mechanism every stage uses: rules written as data, checked against metrics, decisions recorded.

A rule reads ``METRIC OP BOUND`` with OP ``>=`` or ``<=`` and BOUND one of
``12.5`` (absolute), ``teacher`` / ``previous`` / ``reference`` / any named reference,
``previous - 0.5`` (maximum drop in points), ``previous + 2`` or ``0.95 * teacher`` (fraction).
Examples: ``"mAP >= previous - 0.5"``, ``"rank1 >= 0.9 * teacher"``, ``"cosine_min >= 0.98"``.
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass
from typing import Dict, List, Mapping, Optional, Sequence

from compressreid.errors import ConfigError, GateFailed

_NUMBER = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"
_NAME = r"[A-Za-z_][A-Za-z0-9_@.=\-]*"
_RULE = re.compile(rf"^\s*(?P<metric>{_NAME})\s*(?P<op>>=|<=)\s*(?P<bound>.+?)\s*$")
_ABSOLUTE = re.compile(rf"^(?P<value>{_NUMBER})$")
_OFFSET = re.compile(rf"^(?P<ref>[A-Za-z_]\w*)(?:\s*(?P<sign>[-+])\s*(?P<value>{_NUMBER}))?$")
_FRACTION = re.compile(rf"^(?P<value>{_NUMBER})\s*\*\s*(?P<ref>[A-Za-z_]\w*)$")


@dataclass(frozen=True)
class GateRule:
    """One parsed rule: threshold = factor * reference_value + offset (or offset alone when absolute)."""

    text: str
    metric: str
    op: str
    reference: Optional[str]
    factor: float = 1.0
    offset: float = 0.0

    @classmethod
    def parse(cls, text: str) -> "GateRule":
        match = _RULE.match(text)
        if not match:
            raise ConfigError(f"gate rule '{text}' is not 'METRIC >= BOUND' or 'METRIC <= BOUND'")
        metric, op, bound = match["metric"], match["op"], match["bound"]
        if m := _ABSOLUTE.match(bound):
            return cls(text, metric, op, None, 0.0, float(m["value"]))
        if m := _FRACTION.match(bound):
            return cls(text, metric, op, m["ref"], float(m["value"]), 0.0)
        if m := _OFFSET.match(bound):
            offset = float(m["value"] or 0.0) * (-1.0 if m["sign"] == "-" else 1.0)
            return cls(text, metric, op, m["ref"], 1.0, offset)
        raise ConfigError(
            f"gate rule '{text}': bound '{bound}' must be a number, REF, REF - N, REF + N or N * REF"
        )


@dataclass
class GateDecision:
    """What a rule decided, recorded in metrics.json whether it passed or not."""

    rule: str
    metric: str
    op: str
    value: float
    threshold: float
    reference: Optional[str]
    reference_value: Optional[float]
    passed: bool

    def to_dict(self) -> Dict[str, object]:
        return asdict(self)

    def describe(self) -> str:
        return f"{self.rule} (got {self.value:.4g}, needed {self.op} {self.threshold:.4g})"


def _lookup(metrics: Mapping[str, float], metric: str, where: str) -> float:
    if metric not in metrics:
        valid = ", ".join(sorted(metrics)) or "(none)"
        raise ConfigError(f"gate metric '{metric}' is not in the {where} metrics; available: {valid}")
    return float(metrics[metric])


def check_gates(
    rules: Sequence[str],
    metrics: Mapping[str, float],
    references: Optional[Mapping[str, Mapping[str, float]]] = None,
) -> List[GateDecision]:
    """Check every rule; returns one decision per rule (never raises on a failed gate).

    Raises:
        ConfigError: a malformed rule, an unknown metric or an unknown reference name.
    """
    references = references or {}
    decisions = []
    for text in rules:
        rule = GateRule.parse(text)
        value = _lookup(metrics, rule.metric, "stage's")
        ref_value = None
        if rule.reference is not None:
            if rule.reference not in references:
                valid = ", ".join(sorted(references)) or "(none)"
                raise ConfigError(f"gate rule '{text}' names reference '{rule.reference}'; available: {valid}")
            ref_value = _lookup(references[rule.reference], rule.metric, f"'{rule.reference}'")
        threshold = rule.offset + (rule.factor * ref_value if ref_value is not None else 0.0)
        passed = not math.isnan(value) and (value >= threshold if rule.op == ">=" else value <= threshold)
        decisions.append(GateDecision(text, rule.metric, rule.op, value, threshold, rule.reference, ref_value, passed))
    return decisions


def raise_if_failed(decisions: Sequence[GateDecision], stage: str) -> None:
    """Raise ``GateFailed`` naming every failed rule of ``stage``."""
    failed = [d for d in decisions if not d.passed]
    if failed:
        detail = "; ".join(d.describe() for d in failed)
        raise GateFailed(f"{stage}: {len(failed)} gate(s) failed: {detail}", decisions)
