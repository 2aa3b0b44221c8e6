"""Evaluate a model on every DATASETS.TESTS set, draw the report, check TEST.GATES, write metrics.json.

Reference models (e.g. distillation teachers) are evaluated on the same query/gallery with the same evaluator,
reported next to the model and usable as gate references.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from typing import Dict, Iterable, Optional, Sequence

import torch
from torch import nn
from yacs.config import CfgNode

from compressreid.checkpoint import load_checkpoint
from compressreid.data.build import load_test_sets
from compressreid.data.records import DatasetSplits
from compressreid.engine.device import resolve_device
from compressreid.engine.run_dir import RunDirectory
from compressreid.errors import ConfigError
from compressreid.evaluation.cross_model import SUMMARY_METRICS, cross_key, cross_model_from_features
from compressreid.evaluation.evaluator import EvaluationResult, ReIDEvaluator
from compressreid.evaluation.report import metrics_payload, write_plots
from compressreid.modeling import build_model
from compressreid.pipeline.gate import GateRule, check_gates, raise_if_failed

logger = logging.getLogger(__name__)


def load_reference_metrics(path: str) -> Dict[str, Dict[str, float]]:
    """A previous run's metrics.json as the ``reference`` of gate rules."""
    if not path:
        return {}
    if not os.path.isfile(path):
        raise ConfigError(f"TEST.GATE_REFERENCE: metrics file not found: {path}")
    with open(path, "r", encoding="utf-8") as handle:
        data = json.load(handle)
    return {"reference": {k: v for k, v in data.items() if isinstance(v, (int, float))}}


def build_eval_model(cfg: CfgNode) -> nn.Module:
    """The configured model with MODEL.WEIGHTS loaded (required: evaluating random weights is a mistake)."""
    if not cfg.MODEL.WEIGHTS:
        raise ConfigError("MODEL.WEIGHTS is empty: name the checkpoint to evaluate (MODEL.WEIGHTS path/to/model.pth)")
    model = build_model(cfg)
    load_checkpoint(model, cfg.MODEL.WEIGHTS)
    return model


@dataclass
class ReferenceModel:
    """A model evaluated next to the one under test, on the same query/gallery (e.g. a distillation teacher).

    Its metrics go into metrics.json under ``name``, and gate rules may name it (``"mAP >= 0.9 * teacher"``).

    Attributes:
        input_size: its own INPUT.SIZE_TEST (H, W); loaders, evaluator and data otherwise follow the run's config.
        label: what metrics.json calls it (e.g. its checkpoint).
    """

    name: str
    model: nn.Module
    input_size: Sequence[int]
    label: str = ""


def check_gate_rules(rules: Iterable[str], references: Iterable[str]) -> None:
    """Parse every rule and check the references it names are among ``references``; cheap, so tools call it
    before the expensive work (a typo found after hours of training wastes them).

    Raises:
        ConfigError: a malformed rule or an unknown reference.
    """
    available = set(references)
    for text in rules:
        rule = GateRule.parse(text)
        if rule.reference is not None and rule.reference not in available:
            valid = ", ".join(sorted(available)) or "(none)"
            raise ConfigError(f"gate rule '{text}' names reference '{rule.reference}'; available: {valid}")


def _loader_cfg(cfg: CfgNode, input_size: Sequence[int]) -> CfgNode:
    """A derived copy of ``cfg`` whose test loader resizes to ``input_size`` (never dumped or returned)."""
    derived = cfg.clone()
    derived.defrost()
    derived.INPUT.SIZE_TEST = list(input_size)
    return derived


def _log_result(result: EvaluationResult, name: str) -> None:
    m = result.metrics
    logger.info("%s on %s: mAP %.2f  Rank-1 %.2f  Rank-5 %.2f  mINP %.2f", name, result.dataset, m["mAP"],
                m["rank1"], m["rank5"], m["mINP"])
    if "black_mAP" in m:  # set when the query records carry black-clothes flags (see evaluation.subsets)
        logger.info("%s on %s, black-clothes queries (%d): mAP %.2f  Rank-1 %.2f  mINP %.2f", name, result.dataset,
                    m["black_num_query"], m["black_mAP"], m["black_rank1"], m["black_mINP"])


def evaluate_run(cfg: CfgNode, run: RunDirectory, model: Optional[nn.Module] = None, label: str = "model",
                 progress: bool = True, reference_models: Sequence[ReferenceModel] = (),
                 cross_model_with: str = "", name: str = "model") -> Dict[str, object]:
    """Evaluate, write plots and metrics.json (with gate decisions) into ``run``; raises GateFailed on a failed gate.

    Args:
        label: the model in plots, and in metrics.json when MODEL.WEIGHTS is empty.
        reference_models: evaluated on the same sets; each one's metrics land under its name and are a gate
            reference of that name.
        cross_model_with: name of a reference model whose gallery the model's queries are also searched
            against (gallery-compatible students): ``cross_model`` in metrics.json, and top-level
            ``cross_mAP`` / ``cross_rank1`` / ``cross_mINP`` for gates (the reference's own values under the
            same names, so ``"cross_mAP >= 0.9 * teacher"`` compares with teacher-to-teacher retrieval).
        name: the model in the ``cross_model`` keys (``student`` gives ``student_query_teacher_gallery``).
    """
    ref_names = [ref.name for ref in reference_models]
    if cross_model_with and cross_model_with not in ref_names:
        raise ConfigError(f"cross-model evaluation against '{cross_model_with}', which is not among the "
                          f"reference models ({', '.join(ref_names) or 'none'})")
    # check every input before the expensive work: gate rules, reference, data, then the model
    references: Dict[str, Dict[str, float]] = load_reference_metrics(cfg.TEST.GATE_REFERENCE)
    check_gate_rules(cfg.TEST.GATES, [*references, *ref_names])
    device = resolve_device(cfg.MODEL.DEVICE)
    test_sets = load_test_sets(cfg)
    model = (model or build_eval_model(cfg)).to(device).eval()
    evaluator = ReIDEvaluator.from_config(cfg)
    per_set = []
    for test_set in test_sets:
        logger.info("evaluating on %s", test_set.summary())
        per_set.append(_evaluate_test_set(evaluator, cfg, model, test_set, device, progress, label, name,
                                          reference_models, cross_model_with))
        write_plots(per_set[-1].result, run.file("plots"), label, cfg.TEST.WORST_QUERIES)
    payload = metrics_payload([s.result for s in per_set], cfg.MODEL.WEIGHTS or label)
    for ref in reference_models:
        payload[ref.name] = metrics_payload([s.references[ref.name] for s in per_set], ref.label or ref.name)
        references[ref.name] = {k: v for k, v in payload[ref.name].items() if isinstance(v, (int, float))}
    if cross_model_with:
        cross = [s.cross for s in per_set]
        payload["cross_model"] = {"dataset": test_sets[0].name, **cross[0],
                                  "datasets": {t.name: c for t, c in zip(test_sets, cross)}}
        for metric in SUMMARY_METRICS:
            payload[f"cross_{metric}"] = cross[0][cross_key(name, cross_model_with)][metric]
            references[cross_model_with][f"cross_{metric}"] = cross[0][cross_model_with][metric]
    decisions = check_gates(cfg.TEST.GATES, payload, references)
    run.finish(payload, decisions)
    raise_if_failed(decisions, "evaluation")
    return payload


@dataclass
class _SetResults:
    result: EvaluationResult
    references: Dict[str, EvaluationResult]
    cross: Optional[Dict[str, Dict[str, float]]] = None


def _evaluate_test_set(evaluator: ReIDEvaluator, cfg: CfgNode, model: nn.Module, test_set: DatasetSplits,
                       device: torch.device, progress: bool, label: str, name: str,
                       reference_models: Sequence[ReferenceModel], cross_model_with: str) -> _SetResults:
    """The model and every reference model on one test set (features kept only for the cross-model retrieval)."""
    embedded = evaluator.embed(model, test_set, cfg, device, progress)
    out = _SetResults(evaluator.evaluate_embedded(embedded), {})
    _log_result(out.result, label)
    for ref in reference_models:
        ref_embedded = evaluator.embed(ref.model.to(device).eval(), test_set, _loader_cfg(cfg, ref.input_size),
                                       device, progress)
        out.references[ref.name] = evaluator.evaluate_embedded(ref_embedded)
        _log_result(out.references[ref.name], ref.name)
        if ref.name == cross_model_with:
            own = (out.result, out.references[ref.name])
            out.cross = cross_model_from_features(evaluator, embedded, ref_embedded, own).summary(name, ref.name)
            for key, m in out.cross.items():
                logger.info("cross-model %s, %s: mAP %.2f  Rank-1 %.2f  mINP %.2f", test_set.name, key, m["mAP"],
                            m["rank1"], m["mINP"])
    return out
