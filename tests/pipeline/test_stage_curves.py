"""Each evaluated stage saves its ROC points and distance histograms as JSON (plots/<dataset>_curves.json) so the
pipeline report can overlay stages; the saved ROC never claims more than the measured curve."""

from __future__ import annotations

import json

import numpy as np
import pytest

from compressreid.evaluation.evaluator import EvaluationResult
from compressreid.evaluation.report import write_curves, write_plots
from compressreid.evaluation.roc import distance_distributions, roc_from_distmat, tpr_at_fpr


def tiny_result(with_curves=True):
    rng = np.random.default_rng(0)
    q_pids, g_pids = np.repeat(np.arange(6), 2), np.repeat(np.arange(6), 5)
    q_cams, g_cams = np.zeros(12, dtype=int), np.ones(30, dtype=int)
    distmat = rng.uniform(0.5, 1.5, (12, 30)) - 0.4 * (q_pids[:, None] == g_pids[None, :])
    roc = roc_from_distmat(distmat, q_pids, g_pids, q_cams, g_cams) if with_curves else None
    dists = distance_distributions(distmat, q_pids, g_pids, q_cams, g_cams) if with_curves else None
    return EvaluationResult("Synthetic", {"mAP": 1.0}, [], [], None, roc, dists), dists


def test_curves_hold_a_conservative_roc_and_normalised_histograms(tmp_path):
    result, (pos, neg) = tiny_result()
    path = write_curves(result, str(tmp_path / "Synthetic_curves.json"), "student")
    data = json.loads(open(path).read())
    assert data["label"] == "student" and data["dataset"] == "Synthetic"
    roc = data["roc"]
    assert len(roc["fpr"]) == len(roc["tpr"]) == 200 and roc["auc"] == pytest.approx(result.roc.auc)
    assert np.all(np.diff(roc["tpr"]) >= 0) and roc["tpr"][-1] == 1.0
    exact = tpr_at_fpr(result.roc, roc["fpr"][::20])  # the highest TPR reachable at each saved FPR
    assert [roc["tpr"][i] for i in range(0, 200, 20)] == pytest.approx(list(exact.values()))
    hist = data["distances"]
    assert (hist["num_pos"], hist["num_neg"]) == (len(pos), len(neg))
    widths = np.diff(hist["edges"])
    assert float(np.sum(np.asarray(hist["pos"]) * widths)) == pytest.approx(1.0)
    assert float(np.sum(np.asarray(hist["neg"]) * widths)) == pytest.approx(1.0)
    assert np.mean(pos) < np.mean(neg)  # the planted structure: matches are closer


def test_write_plots_saves_curves_only_when_there_are_any(tmp_path):
    result, _ = tiny_result()
    written = write_plots(result, str(tmp_path / "a"), "student", worst_queries=0)
    assert str(tmp_path / "a" / "Synthetic_curves.json") in written
    bare, _ = tiny_result(with_curves=False)
    assert write_plots(bare, str(tmp_path / "b"), "student", worst_queries=0) == []
