"""The checked inputs of a quantize run, found before OUTPUT_DIR is touched: the source model, its metrics and
references, the deployment targets and their formats, the gate rules."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field, replace
from typing import Dict, List, Optional, Sequence

from yacs.config import CfgNode

from compressreid.engine.source_run import SourceRun, resolve_source
from compressreid.engine.verdict import Verdict, source_reference
from compressreid.errors import ConfigError, ExportError
from compressreid.evaluation.run import evaluation_spec
from compressreid.export.conventions import DEFAULT_CONVENTION, get_convention
from compressreid.export.model_card import read_card_if_present
from compressreid.export.ort_model import check_embedding_graph, ort_session
from compressreid.gates import GateSpec
from compressreid.quant.compare import MATCH_FPRS
from compressreid.quant.fallback import check_ranking
from compressreid.quant.judge import QUANT_METRICS, numbers
from compressreid.quant.ptq import check_activation_type, check_calibration_method, check_histogram_bins
from compressreid.quant.refine import Refinement
from compressreid.quant.speed import check_speed_policy
from compressreid.quant.targets import QuantTarget, build_targets

METHODS = ("ptq", "qat")


@dataclass
class QuantPlan:
    """Where the FP32 model comes from, what gates may reference, and the targets to ship (the first is primary).

    Attributes:
        source_convention: the input convention of an ONNX source (its model card's, else the default).
    """

    method: str
    source: Optional[SourceRun]  # a PyTorch run folder / checkpoint
    onnx_source: str  # or an FP32 ONNX file
    input_size: List[int]
    targets: List[QuantTarget]
    references: Dict[str, Dict[str, float]] = field(default_factory=dict)
    source_convention: str = DEFAULT_CONVENTION


def source_metrics(folder: str) -> Dict[str, object]:
    """The source run's metrics.json ({} when there is none)."""
    path = os.path.join(folder, "metrics.json")
    if not folder or not os.path.isfile(path):
        return {}
    with open(path, "r", encoding="utf-8") as handle:
        return json.load(handle)


def _check_quant_keys(q: CfgNode) -> None:
    if q.METHOD not in METHODS:
        raise ConfigError(f"QUANT.METHOD '{q.METHOD}' is unknown; expected one of {METHODS}")
    check_calibration_method(q.CALIBRATION.METHOD)
    check_histogram_bins(q.CALIBRATION.HISTOGRAM_BINS)
    check_activation_type(q.ACTIVATION_TYPE)
    if q.CALIBRATION.NUM_IMAGES < 1 or q.CALIBRATION.BATCH_SIZE < 1:
        raise ConfigError("QUANT.CALIBRATION.NUM_IMAGES and BATCH_SIZE must be >= 1 (calibration needs training "
                          f"images), got {q.CALIBRATION.NUM_IMAGES} and {q.CALIBRATION.BATCH_SIZE}")
    Refinement(q.WEIGHT_ROUNDING, bool(q.BIAS_CORRECTION))  # an unknown rounding is refused here
    check_ranking(q.FALLBACK.RANK_BY, q.FALLBACK.SCAN)
    if q.WEIGHT_BITS not in (0, 7, 8):
        raise ConfigError(f"QUANT.WEIGHT_BITS is {q.WEIGHT_BITS}: expected 0 (each target's own), 7 or 8")
    check_speed_policy(q.BENCHMARK)


def _onnx_source(cfg: CfgNode, targets: List[QuantTarget]) -> QuantPlan:
    q = cfg.QUANT
    if q.METHOD == "qat":
        raise ConfigError(f"QUANT.METHOD qat needs a PyTorch model to fine-tune; QUANT.SOURCE is an ONNX file "
                          f"({q.SOURCE}): name the run folder instead")
    if not os.path.isfile(q.SOURCE):
        raise ExportError(f"QUANT.SOURCE: ONNX file not found: {q.SOURCE}")
    shape = check_embedding_graph(q.SOURCE)
    ort_session(q.SOURCE)  # an operator ONNX Runtime cannot run is bad input, found before OUTPUT_DIR exists
    expected = list(cfg.INPUT.SIZE_TEST)
    if any(0 < s != e for s, e in zip(shape[2:], expected)):
        raise ExportError(f"QUANT.SOURCE {q.SOURCE} takes {shape[2]}x{shape[3]} images but INPUT.SIZE_TEST is "
                          f"{expected[0]}x{expected[1]}")
    card = read_card_if_present(q.SOURCE) or {}
    convention = get_convention(str(card.get("input_convention", DEFAULT_CONVENTION)))
    for target in targets:  # an ONNX graph cannot be re-exported under another convention
        if target.convention.name != convention.name:
            raise ConfigError(f"target {target.name} takes input convention {target.convention.name}, but the ONNX "
                              f"source {q.SOURCE} takes {convention.name}: set QUANT.INPUT_CONVENTION "
                              f"{convention.name}, or give the source run folder so the model can be re-exported")
    return QuantPlan(q.METHOD, None, q.SOURCE, expected, targets, source_convention=convention.name)


def check_quantize_inputs(cfg: CfgNode, allow_unsafe: bool = False) -> QuantPlan:
    """Everything cheap to check, before OUTPUT_DIR is touched.

    Raises:
        ConfigError / CheckpointError / ExportError: unknown method, calibration method or target, a runtime that is
            not installed, a target format that cannot keep the target's promise, QAT asked for targets of
            different formats, a missing source, an ONNX source that is not an images -> embedding graph of
            INPUT.SIZE_TEST or disagrees with its model card, QAT asked of an ONNX source, a gate naming an unknown
            reference.
    """
    q = cfg.QUANT
    _check_quant_keys(q)
    targets = build_targets(cfg)
    if q.METHOD == "qat" and len({replace(t.fmt, placement="fused") for t in targets}) > 1:  # QAT places its own
        raise ConfigError("QUANT.METHOD qat trains one INT8 format, but QUANT.TARGETS need "
                          + ", ".join(f"{t.name}: {t.fmt.describe()['weights']}, {t.fmt.activations} activations"
                                      for t in targets) + "; run QAT once per format")
    if q.SOURCE.endswith(".onnx"):
        plan = _onnx_source(cfg, targets)
    else:
        source = resolve_source(q.SOURCE, cfg, "QUANT.SOURCE", allow_unsafe=allow_unsafe)
        plan = QuantPlan(q.METHOD, source, "", list(source.config.INPUT.SIZE_TEST), targets)
        measured = source_metrics(source.folder)
        if measured:  # what the source stage measured (gate reference ``source``, and ``source_mAP_delta``)
            plan.references["source"] = numbers(measured)
        if isinstance(measured.get("teacher"), dict):
            plan.references["teacher"] = numbers(measured["teacher"])
    for target in targets:
        target.check_source(plan.source.config if plan.source else None, plan.onnx_source)
    return plan


def quant_gate_spec(cfg: CfgNode, source: Sequence[str] = (), teacher: Optional[Sequence[str]] = None) -> GateSpec:
    """What a quantize run reports for each target's file: its evaluation, its agreement with FP32, its runtime's
    agreement with the file's semantics, its accumulation bounds and structural checks; references ``fp32`` (the
    exported FP32 model, same data), ``source`` / ``teacher`` (what the source run measured: ``source`` lists its
    metric names, ``teacher`` its teacher's when it has one), ``fake_quant`` (QAT)."""
    base = evaluation_spec(cfg)
    shifts = [f"threshold_shift@FPR={fpr}" for fpr in MATCH_FPRS] if "threshold@FPR=1e-02" in base.metrics else []
    metrics = (*base.metrics, *QUANT_METRICS, *shifts, *(["source_mAP_delta"] if "mAP" in source else []))
    references = {"fp32": (*base.metrics, "cosine_mean", "cosine_min", "top10_overlap")}
    if source:
        references["source"] = tuple(source)
    if teacher:
        references["teacher"] = tuple(teacher)
    sets = {}
    if cfg.QUANT.METHOD == "qat":  # the fake-quant model is evaluated on the first test set only
        references["fake_quant"] = ("mAP", "rank1", "rank5", "mINP")
        sets["fake_quant"] = tuple(base.datasets[:1])
    return GateSpec(metrics, references, base.datasets, sets)


def quantize_verdict(cfg: CfgNode, plan: QuantPlan) -> Verdict:
    """The quantize run's gates, validated now (before any export or calibration)."""
    previous = source_reference(plan.source.folder) if plan.source is not None else {}
    spec = quant_gate_spec(cfg, tuple(plan.references.get("source", {})), plan.references.get("teacher"))
    return Verdict("quantize", cfg, spec, previous)
