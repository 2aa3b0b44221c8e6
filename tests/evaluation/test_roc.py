"""Pairwise ROC, TPR at fixed FPR and distance distributions on a hand-built example."""

import numpy as np
import pytest

from compressreid.errors import DataError
from compressreid.evaluation import distance_distributions, roc_from_distmat, tpr_at_fpr

# One query (pid 1, camera 0). Gallery 4 shares its camera and is excluded whatever its pid.
DIST = np.array([[0.1, 0.2, 0.5, 0.4, 0.0]])
LABELS = ([1], [1, 2, 1, 3, 1], [0], [1, 1, 1, 1, 0])


def test_distance_distributions_exclude_same_camera():
    pos, neg = distance_distributions(DIST, *LABELS)
    np.testing.assert_allclose(np.sort(pos), [0.1, 0.5])
    np.testing.assert_allclose(np.sort(neg), [0.2, 0.4])


def test_roc_by_hand():
    # Sorted by distance: P(0.1) N(0.2) N(0.4) P(0.5). The first positive beats both negatives, the second
    # neither, so AUC = 2/4; the curve goes (0,0) -> (0,.5) -> (1,.5) -> (1,1).
    roc = roc_from_distmat(DIST, *LABELS)
    assert roc.num_pos == 2 and roc.num_neg == 2
    assert roc.auc == pytest.approx(0.5)
    np.testing.assert_allclose(roc.fpr, [0, 0, 1, 1])
    np.testing.assert_allclose(roc.tpr, [0, 0.5, 0.5, 1])
    np.testing.assert_allclose(roc.thresholds, [-np.inf, 0.1, 0.4, 0.5])
    assert tpr_at_fpr(roc) == {"TPR@FPR=1e-04": 0.5, "TPR@FPR=1e-03": 0.5, "TPR@FPR=1e-02": 0.5}
    assert tpr_at_fpr(roc, targets=(1.0,)) == {"TPR@FPR=1e+00": 1.0}


def test_perfect_separation():
    rng = np.random.default_rng(0)
    q_pids, g_pids = rng.integers(0, 5, 20), rng.integers(0, 5, 50)
    dist = np.where(q_pids[:, None] == g_pids[None, :], 0.1, 0.9) + rng.random((20, 50)) * 0.01
    roc = roc_from_distmat(dist, q_pids, g_pids, np.zeros(20), np.ones(50))
    assert roc.auc == pytest.approx(1.0)
    assert all(v == 1.0 for v in tpr_at_fpr(roc).values())


def test_negative_subsampling_is_bounded_and_seeded():
    rng = np.random.default_rng(1)
    q_pids, g_pids = rng.integers(0, 3, 30), rng.integers(0, 3, 40)
    dist = rng.random((30, 40))
    args = (dist, q_pids, g_pids, np.zeros(30), np.ones(40))
    a = roc_from_distmat(*args, max_negatives=100, seed=3)
    b = roc_from_distmat(*args, max_negatives=100, seed=3)
    assert a.num_neg == 100 and a.num_pos == int((q_pids[:, None] == g_pids[None, :]).sum())
    np.testing.assert_array_equal(a.tpr, b.tpr)


def test_roc_needs_both_classes():
    with pytest.raises(DataError, match="0 positive"):
        roc_from_distmat(DIST, [9], *LABELS[1:])
    with pytest.raises(DataError, match="NaN"):
        roc_from_distmat(np.full((1, 5), np.nan), *LABELS)
    with pytest.raises(DataError, match="g_pids"):
        roc_from_distmat(DIST, [1], [1, 2], [0], [1, 1, 1, 1, 0])
