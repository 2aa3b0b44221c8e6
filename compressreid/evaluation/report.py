"""Evaluation outputs a person looks at: ROC, distance distributions, worst-query rank lists."""

from __future__ import annotations

import os
from typing import Dict, List

import numpy as np

from compressreid.evaluation.evaluator import EvaluationResult, encode_identities


def write_plots(result: EvaluationResult, directory: str, label: str, worst_queries: int = 8) -> List[str]:
    """Draw the result's pictures into ``directory``; returns the files written (dense results only)."""
    from compressreid.evaluation import plots  # matplotlib only when pictures are asked for

    os.makedirs(directory, exist_ok=True)
    written = []
    prefix = result.dataset
    if result.roc is not None:
        written.append(plots.plot_roc({label: result.roc}, os.path.join(directory, f"{prefix}_roc.png")))
    if result.pos_neg_distances is not None:
        written.append(plots.plot_distance_distributions(
            {label: result.pos_neg_distances}, os.path.join(directory, f"{prefix}_distances.png")))
    if result.distmat is not None and worst_queries > 0:
        q_ids, g_ids = encode_identities([r.pid for r in result.q_records], [r.pid for r in result.g_records])
        written.append(plots.plot_worst_queries(
            [r.path for r in result.q_records], [r.path for r in result.g_records], result.distmat, q_ids, g_ids,
            np.array([r.camid for r in result.q_records]), np.array([r.camid for r in result.g_records]),
            os.path.join(directory, f"{prefix}_worst_queries.png"), num_queries=worst_queries))
    return written


def metrics_payload(results: List[EvaluationResult], model: str) -> Dict[str, object]:
    """metrics.json content: the first test set's metrics at the top level, every set under ``datasets``."""
    first = results[0]
    payload: Dict[str, object] = {"model": model, "dataset": first.dataset, **first.metrics}
    payload["datasets"] = {r.dataset: {**r.metrics, "notes": r.notes} for r in results}
    return payload
