"""What a quantize run says about its targets: each target's outcome, its model-card entries and the run's
metrics.json.

``run`` below is the run's shared state (``compressreid.quant.run._Run``): its plan, FP32 results, references, and
the FP32 file and its latency.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Dict, List

from compressreid.evaluation.report import metrics_payload
from compressreid.export.conventions import get_convention
from compressreid.export.model_card import graph_embedding_dim, input_contract, target_entry
from compressreid.gates import GateDecision
from compressreid.quant.compare import match_thresholds, summary
from compressreid.quant.judge import QDQ_SEMANTICS
from compressreid.quant.plan import source_metrics
from compressreid.quant.targets import QuantTarget

FP32_FILE = "student_fp32.onnx"


@dataclass
class TargetOutcome:
    """What one target shipped (or rejected) and why."""

    target: QuantTarget
    primary: bool
    files: List[str]
    accepted: bool
    metrics: Dict[str, float]
    results: List[object]  # EvaluationResult per test set, of the judged file
    payload: Dict[str, object]  # metrics.json's shape: first test set at the top level, every set under datasets
    decisions: List[GateDecision]
    fallback: Dict[str, object]
    latency: Dict[str, object]
    certification: Dict[str, Dict[str, object]]
    size_bytes: int  # of the INT8 file
    info: Dict[str, object] = field(default_factory=dict)
    shipping: Dict[str, object] = field(default_factory=dict)  # compressreid.quant.speed.shipping_decision
    fp32_files: List[str] = field(default_factory=list)  # the FP32 model shipped instead of ``files`` (WHEN_SLOWER)

    @property
    def shipped(self) -> str:
        """The model file the target ships: its FP32 model when INT8 was slower and QUANT.BENCHMARK.WHEN_SLOWER is
        ship_fp32 (the default), its INT8 file otherwise."""
        return (self.fp32_files or self.files)[0]


def card_entries(outcome: TargetOutcome, run) -> List[Dict[str, object]]:
    """The target's card entries: its shipped file's, then, where it ships FP32, the kept INT8 file's (so a reader
    looking the INT8 file up finds its own contract and input convention)."""
    entry = _entry(outcome, run, outcome.shipped)
    entry["shipping"] = shipping_entry(outcome)
    if not outcome.fp32_files:
        return [entry]
    entry["target"]["format"] = {"precision": "fp32"}  # the metrics stay the INT8 file's, beside FP32's
    for key in ("certification", "fallback_fp32_layers"):  # the INT8 file's: on its own entry
        del entry["target"][key]
    int8 = _entry(outcome, run, outcome.files[0])
    int8["shipping"] = {**entry["shipping"], "precision": "int8", "shipped": False,
                        "fp32_model": os.path.basename(outcome.shipped)}
    del int8["shipping"]["int8_model"]
    return [entry, int8]


def _entry(outcome: TargetOutcome, run, path: str) -> Dict[str, object]:
    """The card entry of ``path``, one of the target's files."""
    t = outcome.target
    describe = {**t.describe(), "format": t.fmt.describe(run.plan.method), "certification": outcome.certification,
                "judged_in": outcome.info["runtime"],
                "fallback_fp32_layers": outcome.fallback.get("fp32_layers", [])}
    metrics = {"int8": summary(outcome.results[0]), "fp32": summary(run.fp32[0].result),
               **{k: v for k, v in outcome.metrics.items() if k.startswith(("cosine", "runtime_", "top10"))},
               **({"teacher": run.references["teacher"]} if "teacher" in run.references else {}),
               **({QDQ_SEMANTICS: summary_of(outcome.metrics[QDQ_SEMANTICS])} if QDQ_SEMANTICS in outcome.metrics
                  else {})}
    entry = target_entry(path, run.plan.input_size, metrics, [d.to_dict() for d in outcome.decisions],
                         outcome.accepted, outcome.latency, t.convention, describe)
    # the fixed match threshold a tracker uses (deep-sort's max_cosine_distance) moves with the model: the card gives
    # this file's, its FP32 source's and the teacher's at the same false-positive rates (first test set)
    thresholds = {"int8": match_thresholds(outcome.results[0].metrics),
                  "fp32": match_thresholds(run.fp32[0].result.metrics),
                  "teacher": match_thresholds(run.references.get("teacher", {}))}
    entry["match_thresholds"] = {"distance": run.cfg.TEST.METRIC, "pairs": "cross-camera query-gallery pairs",
                                 **{k: v for k, v in thresholds.items() if v}}
    return entry


def shipping_entry(outcome: TargetOutcome) -> Dict[str, object]:
    """The card's word on which precision ships and why; where FP32 ships, ``metrics`` are still the INT8 file's
    (named here), judged by the gates, beside its FP32 source's."""
    entry = {**outcome.shipping, "precision": outcome.shipping["ships"], "shipped": True}
    del entry["ships"]
    if outcome.fp32_files:
        entry["int8_model"] = os.path.basename(outcome.files[0])
    return entry


def fp32_entry(run) -> Dict[str, object]:
    """The card's entry of the run's FP32 source file: its input contract, which may differ from the targets' (it is
    exported in the source's convention), so the file can itself be quantized or deployed from its card."""
    return {"model": FP32_FILE, **input_contract(run.plan.input_size, graph_embedding_dim(run.fp32_path),
                                                 get_convention(run.plan.source_convention)),
            "size_bytes": os.path.getsize(run.fp32_path)}


def run_payload(run, outcomes: List[TargetOutcome]) -> Dict[str, object]:
    """metrics.json: the primary target's file at the top level (as before targets existed), every target's under
    ``targets``."""
    main = outcomes[0]
    payload = metrics_payload(main.results, os.path.basename(main.files[0]))
    payload.update({k: v for k, v in main.metrics.items() if k not in payload})
    payload["fp32"] = metrics_payload([e.result for e in run.fp32], FP32_FILE)
    payload.update({name: run.references[name] for name in ("teacher", "fake_quant") if name in run.references})
    if run.plan.source is not None:
        payload["source"] = {"run": run.plan.source.label, **summary_of(source_metrics(run.plan.source.folder))}
    method = {**run.method_info, "format": "QDQ", **main.target.fmt.describe(run.plan.method)}
    if "runtime_cosine_min" in main.metrics:
        method["runtime_parity"] = {"cosine_min": main.metrics["runtime_cosine_min"],
                                    "cosine_mean": main.metrics["runtime_cosine_mean"],
                                    "fp32_gap": main.metrics["runtime_fp32_gap"],
                                    "images": int(main.metrics["runtime_parity_images"])}
    payload.update({"artifact": os.path.basename(main.shipped), "export_parity": run.export_parity,
                    "quantization": method, "fallback": main.fallback,
                    # the FP32 time the primary file's speed-ups are over (its runtime's, timed in turn with it)
                    "latency": {**main.latency, "fp32": main.latency.get("fp32") or run.fp32_latency()},
                    "size_bytes": {"fp32": os.path.getsize(run.fp32_path), "int8": main.size_bytes},
                    "shipping": shipping_entry(main),
                    "targets": {o.target.name: {"file": os.path.basename(o.files[0]), "accepted": o.accepted,
                                                "shipped": os.path.basename(o.shipped),
                                                "shipping": shipping_entry(o),
                                                **o.metrics, "certification": o.certification,
                                                "fallback": o.fallback, "latency": o.latency,
                                                "size_bytes": o.size_bytes} for o in outcomes}})
    return payload


def summary_of(metrics: Dict[str, object]) -> Dict[str, float]:
    return {k: float(metrics[k]) for k in ("mAP", "rank1", "mINP") if isinstance(metrics.get(k), (int, float))}
