"""The verdict of a run: its gates, parsed and validated before any work against what the run will report, checked
once on what it reported (every test set, every judged item, the built-in collapse check), and the decision written
to metrics.json and status.json. Every tool and every pipeline stage ends through ``Verdict``; a stage computes, it
does not judge itself.
"""

from __future__ import annotations

import json
import logging
import os
from typing import Dict, List, Mapping, Optional, Sequence

from yacs.config import CfgNode

from compressreid.engine.run_dir import RunDirectory
from compressreid.errors import ConfigError
from compressreid.gates import (UNGATED, GateDecision, GateSet, GateSpec, Judged, Payload, per_set,
                                raise_if_failed, status_of)

logger = logging.getLogger(__name__)

REFERENCE = "reference"  # the gate reference read from TEST.GATE_REFERENCE
PREVIOUS = "previous"  # the stage before (the pipeline), or the source run a stage compresses (prune, quantize)


def read_metrics_file(path: str, what: str) -> Dict[str, object]:
    """A metrics.json used as a gate reference.

    Raises:
        ConfigError: the file is missing or not JSON (one line naming ``what`` and the path).
    """
    if not os.path.isfile(path):
        raise ConfigError(f"{what}: metrics file not found: {path}")
    try:
        with open(path, "r", encoding="utf-8") as handle:
            return json.load(handle)
    except (OSError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{what}: {path} is not a readable metrics.json ({exc})") from None


def source_reference(folder: str) -> Dict[str, Payload]:
    """``previous`` for a stage that compresses an earlier run: that run's metrics.json ({} when it has none)."""
    path = os.path.join(folder, "metrics.json") if folder else ""
    return {PREVIOUS: read_metrics_file(path, "the source run")} if path and os.path.isfile(path) else {}


def metric_names(payload: Payload) -> List[str]:
    """Every metric name a payload holds, on any test set."""
    return sorted({name for values in per_set(payload).values() for name in values})


def collapse_rules(cfg: CfgNode) -> List[str]:
    """The built-in check every evaluated model passes: its embeddings still tell images apart."""
    c = cfg.TEST.COLLAPSE
    return [f"collapse_mean_cosine <= {c.MAX_MEAN_COSINE}", f"distinct_nn_share >= {c.MIN_DISTINCT_NN_SHARE}"]


class Verdict:
    """A stage's gates, checked once at the end of its run.

    Built before any work: a rule naming a metric the stage does not report, a reference it does not offer or a
    test set it does not evaluate is a ConfigError then, in seconds.

    Args:
        stage: the stage's name, in messages ("teacher", "quantize", ...).
        spec: what the stage will report (see the stages' ``*_gate_spec`` functions).
        references: references the caller offers besides the stage's own (the pipeline's ``previous``).
    """

    def __init__(self, stage: str, cfg: CfgNode, spec: GateSpec, references: Optional[Mapping[str, Payload]] = None):
        self.stage = stage
        self.references: Dict[str, Payload] = dict(references or {})
        if cfg.TEST.GATE_REFERENCE:
            self.references[REFERENCE] = read_metrics_file(cfg.TEST.GATE_REFERENCE, "TEST.GATE_REFERENCE")
        for name, payload in self.references.items():
            spec = spec.with_reference(name, metric_names(payload))
        self.gates = GateSet(cfg.TEST.GATES, f"stage '{stage}'")
        self.gates.validate(spec.metrics, spec.references, spec.datasets, spec.reference_sets)
        self.builtin = collapse_rules(cfg)
        self.status: Optional[str] = None

    def offer(self, name: str, payload: Payload) -> None:
        """Offer a reference known only at run time (the pipeline's ``previous``: the stage before's metrics)."""
        self.references[name] = payload

    @property
    def gated(self) -> bool:
        return bool(self.gates)

    def decide(self, judged: Sequence[Judged]) -> List[GateDecision]:
        """Every rule on every judged item: TEST.GATES, the built-in checks, the item's own rules."""
        decisions = []
        for item in judged:
            full = Judged(item.metrics, {**self.references, **item.references}, [*self.builtin, *item.rules],
                          item.scope, item.measured_for)
            decisions.extend(self.gates.check(full))
        return decisions

    def __call__(self, run: RunDirectory, payload: Dict[str, object],
                 judged: Optional[Sequence[Judged]] = None) -> List[GateDecision]:
        """Judge ``judged`` (default: the payload itself, with no references), write metrics.json and the status.

        Raises:
            GateFailed: a rule failed (metrics.json and status 'rejected' are written first).
        """
        decisions = self.decide(judged if judged is not None else [Judged(payload)])
        self.status = status_of(decisions, self.gated)
        run.finish(payload, decisions, self.status)
        if self.status == UNGATED:
            logger.warning("%s: no TEST.GATES rule is configured: the run is UNGATED, not accepted (only the "
                           "built-in checks ran); add an absolute floor such as \"mAP >= 20\"", self.stage)
        raise_if_failed(decisions, self.stage)
        return decisions
