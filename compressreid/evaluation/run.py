"""Evaluate a model on every DATASETS.TESTS set and draw the report; the caller's Verdict judges the metrics.

Reference models (e.g. distillation teachers) are evaluated on the same query/gallery with the same evaluator,
reported next to the model and offered as gate references.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence

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
from compressreid.evaluation.metric_names import evaluation_metric_names
from compressreid.gates import GateSpec, Judged

logger = logging.getLogger(__name__)


def build_eval_model(cfg: CfgNode, allow_unsafe: bool = False) -> nn.Module:
    """The configured model with MODEL.WEIGHTS loaded (required: evaluating random weights is a mistake).

    The load is strict unless MODEL.LOAD_STRICT is False: a checkpoint missing part of the model would otherwise
    be evaluated with random weights in that part.

    Args:
        allow_unsafe: the user trusts the file with arbitrary unpickling (``--allow-unsafe-checkpoint``).

    Raises:
        ConfigError: no MODEL.WEIGHTS. CheckpointError: unreadable, unsafe or (strict) mismatched checkpoint.
    """
    if not cfg.MODEL.WEIGHTS:
        raise ConfigError("MODEL.WEIGHTS is empty: name the checkpoint to evaluate (MODEL.WEIGHTS path/to/model.pth)")
    model = build_model(cfg)
    load_checkpoint(model, cfg.MODEL.WEIGHTS, allow_unsafe=allow_unsafe, strict=cfg.MODEL.LOAD_STRICT)
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


def evaluation_spec(cfg: CfgNode, extra_metrics: Sequence[str] = (), reference_models: Sequence[str] = ()) -> GateSpec:
    """What ``evaluate_run`` will report for ``cfg`` (metric names, references, test sets)."""
    metrics = tuple(evaluation_metric_names(cfg)) + tuple(extra_metrics)
    return GateSpec(metrics, {name: metrics for name in reference_models}, tuple(cfg.DATASETS.TESTS))


@dataclass
class Evaluation:
    """What ``evaluate_run`` measured: metrics.json's payload and the reference models' payloads (gate
    references of their names)."""

    payload: Dict[str, object]
    references: Dict[str, Dict[str, object]]

    def judged(self) -> List[Judged]:
        return [Judged(self.payload, self.references)]


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
                 cross_model_with: str = "", name: str = "model", allow_unsafe: bool = False) -> Evaluation:
    """Evaluate on every test set and write the plots into ``run``; the caller's Verdict judges the result.

    Args:
        label: the model in plots, and in metrics.json when MODEL.WEIGHTS is empty.
        reference_models: evaluated on the same sets; each one's metrics land under its name and are a gate
            reference of that name.
        cross_model_with: name of a reference model whose gallery the model's queries are also searched
            against (gallery-compatible students): ``cross_model`` in metrics.json, and top-level
            ``cross_mAP`` / ``cross_rank1`` / ``cross_mINP`` for gates (the reference's own values under the
            same names, so ``"cross_mAP >= 0.9 * teacher"`` compares with teacher-to-teacher retrieval).
        name: the model in the ``cross_model`` keys (``student`` gives ``student_query_teacher_gallery``).
        allow_unsafe: when ``model`` is None, MODEL.WEIGHTS may need arbitrary unpickling (a file the user trusts).
    """
    ref_names = [ref.name for ref in reference_models]
    if cross_model_with and cross_model_with not in ref_names:
        raise ConfigError(f"cross-model evaluation against '{cross_model_with}', which is not among the "
                          f"reference models ({', '.join(ref_names) or 'none'})")
    device = resolve_device(cfg.MODEL.DEVICE)
    test_sets = load_test_sets(cfg)
    model = (model or build_eval_model(cfg, allow_unsafe)).to(device).eval()
    evaluator = ReIDEvaluator.from_config(cfg)
    per_set = []
    for test_set in test_sets:
        logger.info("evaluating on %s", test_set.summary())
        per_set.append(_evaluate_test_set(evaluator, cfg, model, test_set, device, progress, label, name,
                                          reference_models, cross_model_with))
        write_plots(per_set[-1].result, run.file("plots"), label, cfg.TEST.WORST_QUERIES)
    payload = metrics_payload([s.result for s in per_set], cfg.MODEL.WEIGHTS or label)
    references: Dict[str, Dict[str, object]] = {}
    for ref in reference_models:
        payload[ref.name] = metrics_payload([s.references[ref.name] for s in per_set], ref.label or ref.name)
        references[ref.name] = dict(payload[ref.name])
    if cross_model_with:
        cross = [s.cross for s in per_set]
        payload["cross_model"] = {"dataset": test_sets[0].name, **cross[0],
                                  "datasets": {t.name: c for t, c in zip(test_sets, cross)}}
        for metric in SUMMARY_METRICS:
            payload[f"cross_{metric}"] = cross[0][cross_key(name, cross_model_with)][metric]
            references[cross_model_with][f"cross_{metric}"] = cross[0][cross_model_with][metric]
    return Evaluation(payload, references)


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
