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
    curves = write_curves(result, os.path.join(directory, f"{prefix}_curves.json"), label)
    return written + ([curves] if curves else [])


def write_curves(result: EvaluationResult, path: str, label: str, points: int = 200, bins: int = 60) -> str:
    """Save the ROC and distance distributions as JSON so a report can overlay several models; "" when neither.

    The ROC is TPR on a log-spaced FPR grid (the highest TPR at FPR <= each point, never above the curve); the
    distances are density histograms over shared edges, with the true pair counts.
    """
    from compressreid.engine.io import atomic_write_json

    data: Dict[str, object] = {"label": label, "dataset": result.dataset}
    if result.roc is not None:
        roc = result.roc
        grid = np.logspace(-6, 0, points)
        tpr = roc.tpr[np.clip(np.searchsorted(roc.fpr, grid, side="right") - 1, 0, None)]
        data["roc"] = {"fpr": grid.tolist(), "tpr": tpr.tolist(), "auc": float(roc.auc),
                       "num_pos": int(roc.num_pos), "num_neg": int(roc.num_neg),
                       # the match thresholds a tracker would use, at the FPRs the report marks
                       "operating_points": [{"fpr": float(f), "tpr": result.metrics[f"TPR@FPR={f}"] / 100.0,
                                             "threshold": result.metrics[f"threshold@FPR={f}"]}
                                            for f in ("1e-03", "1e-02")
                                            if f"threshold@FPR={f}" in result.metrics]}
    if result.pos_neg_distances is not None:
        pos, neg = (np.asarray(a, dtype=np.float64) for a in result.pos_neg_distances)
        both = np.concatenate([pos, neg])
        lo, hi = (float(both.min()), float(both.max())) if len(both) else (0.0, 1.0)
        edges = np.linspace(lo, hi if hi > lo else lo + 1.0, bins + 1)
        density = lambda a: np.histogram(a, edges, density=True)[0].tolist() if len(a) else [0.0] * bins  # noqa: E731
        data["distances"] = {"edges": edges.tolist(), "pos": density(pos), "neg": density(neg),
                             "num_pos": len(pos), "num_neg": len(neg)}
    if len(data) == 2:
        return ""
    return atomic_write_json(path, data)


def metrics_payload(results: List[EvaluationResult], model: str) -> Dict[str, object]:
    """metrics.json content: the first test set's metrics at the top level, every set under ``datasets``."""
    first = results[0]
    payload: Dict[str, object] = {"model": model, "dataset": first.dataset, **first.metrics}
    payload["datasets"] = {r.dataset: {**r.metrics, "notes": r.notes} for r in results}
    return payload
