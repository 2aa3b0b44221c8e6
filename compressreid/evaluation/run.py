"""Evaluate a model on every DATASETS.TESTS set, draw the report, check TEST.GATES, write metrics.json."""

from __future__ import annotations

import json
import logging
import os
from typing import Dict, Optional

from torch import nn
from yacs.config import CfgNode

from compressreid.checkpoint import load_checkpoint
from compressreid.data.build import load_test_sets
from compressreid.engine.device import resolve_device
from compressreid.engine.run_dir import RunDirectory
from compressreid.errors import ConfigError
from compressreid.evaluation.evaluator import ReIDEvaluator
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


def evaluate_run(cfg: CfgNode, run: RunDirectory, model: Optional[nn.Module] = None, label: str = "model",
                 progress: bool = True) -> Dict[str, object]:
    """Evaluate, write plots and metrics.json (with gate decisions) into ``run``; raises GateFailed on a failed gate."""
    # check every input before the expensive work: gate rules, reference, data, then the model
    for rule in cfg.TEST.GATES:
        GateRule.parse(rule)
    references = load_reference_metrics(cfg.TEST.GATE_REFERENCE)
    device = resolve_device(cfg.MODEL.DEVICE)
    test_sets = load_test_sets(cfg)
    model = (model or build_eval_model(cfg)).to(device).eval()
    evaluator = ReIDEvaluator.from_config(cfg)
    results = []
    for test_set in test_sets:
        logger.info("evaluating on %s", test_set.summary())
        result = evaluator.evaluate_model(model, test_set, cfg, device, progress)
        write_plots(result, run.file("plots"), label, cfg.TEST.WORST_QUERIES)
        m = result.metrics
        logger.info("%s: mAP %.2f  Rank-1 %.2f  Rank-5 %.2f  mINP %.2f", result.dataset, m["mAP"], m["rank1"],
                    m["rank5"], m["mINP"])
        if "black_mAP" in m:  # set when the query records carry black-clothes flags (see evaluation.subsets)
            logger.info("%s black-clothes queries (%d): mAP %.2f  Rank-1 %.2f  mINP %.2f", result.dataset,
                        m["black_num_query"], m["black_mAP"], m["black_rank1"], m["black_mINP"])
        results.append(result)
    payload = metrics_payload(results, cfg.MODEL.WEIGHTS or label)
    decisions = check_gates(cfg.TEST.GATES, payload, references)
    run.finish(payload, decisions)
    raise_if_failed(decisions, "evaluation")
    return payload
