"""k-reciprocal re-ranking against a set-based transcription of the paper, and its effect on a toy retrieval."""

import math

import numpy as np
import pytest

from compressreid.errors import DataError
from compressreid.evaluation import compute_distance, evaluate_rank_detailed, k_reciprocal_rerank


def reference_rerank(q_g, q_q, g_g, k1, k2, lam):
    """Eq. (4)-(12) of Zhong et al. with Python sets and loops (distances assumed free of ties)."""
    full = np.block([[q_q, q_g], [q_g.T, g_g]]).astype(np.float64)
    full = np.maximum(full, 0.0)
    np.fill_diagonal(full, 0.0)
    full /= full.max()
    n, nq = len(full), len(q_q)

    def knn(p, k):  # p itself plus its k nearest
        others = sorted((j for j in range(n) if j != p), key=lambda j: full[p, j])
        return {p, *others[:k]}

    def reciprocal(p, k):
        return {g for g in knn(p, k) if p in knn(g, k)}

    half = int(round(k1 / 2))
    vectors = np.zeros((n, n))
    for p in range(n):
        r = reciprocal(p, k1)
        expanded = set(r)
        for q in r:
            rq = reciprocal(q, half)
            if len(r & rq) >= 2 / 3 * len(rq):
                expanded |= rq
        for g in expanded:
            vectors[p, g] = math.exp(-full[p, g])
        vectors[p] /= vectors[p].sum()
    if k2 > 1:
        vectors = np.stack([vectors[sorted(knn(p, k2 - 1))].mean(axis=0) for p in range(n)])
    jaccard = np.array([[1 - np.minimum(vectors[p], vectors[g]).sum() / np.maximum(vectors[p], vectors[g]).sum()
                         for g in range(nq, n)] for p in range(nq)])
    return (1 - lam) * jaccard + lam * full[:nq, nq:]


def toy_problem(seed, num_q=60, num_g=400, num_ids=30, dim=32):
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((num_ids, dim))
    cam_shift = rng.standard_normal((3, dim)) * 0.8

    def sample(n):
        pids, cams = rng.integers(0, num_ids, n), rng.integers(0, 3, n)
        feats = centers[pids] + cam_shift[cams] + 1.2 * rng.standard_normal((n, dim))
        return feats.astype(np.float32), pids, cams

    return sample(num_q), sample(num_g)


@pytest.mark.parametrize("k1, k2", [(6, 3), (4, 1), (20, 6)])
def test_matches_reference(k1, k2):
    (qf, _, _), (gf, _, _) = toy_problem(0, num_q=6, num_g=30)
    dists = compute_distance(qf, gf), compute_distance(qf, qf), compute_distance(gf, gf)
    out = k_reciprocal_rerank(*dists, k1=k1, k2=k2, lambda_value=0.3)
    assert out.shape == (6, 30) and out.dtype == np.float32
    np.testing.assert_allclose(out, reference_rerank(*dists, k1, k2, 0.3), atol=1e-5)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_rerank_keeps_or_improves_map(seed):
    (qf, qp, qc), (gf, gp, gc) = toy_problem(seed)
    dists = compute_distance(qf, gf), compute_distance(qf, qf), compute_distance(gf, gf)
    before = evaluate_rank_detailed(dists[0], qp, gp, qc, gc).mAP
    after = evaluate_rank_detailed(k_reciprocal_rerank(*dists), qp, gp, qc, gc).mAP
    assert after >= before


def test_lambda_one_keeps_the_original_ranking():
    (qf, _, _), (gf, _, _) = toy_problem(5, num_q=5, num_g=20)
    q_g = compute_distance(qf, gf, "euclidean")
    out = k_reciprocal_rerank(q_g, compute_distance(qf, qf, "euclidean"), compute_distance(gf, gf, "euclidean"),
                              lambda_value=1.0)
    np.testing.assert_array_equal(np.argsort(out, axis=1), np.argsort(q_g, axis=1))


def test_bad_inputs():
    with pytest.raises(DataError, match="do not match"):
        k_reciprocal_rerank(np.zeros((2, 3)), np.zeros((2, 2)), np.zeros((2, 2)))
    with pytest.raises(DataError, match="non-empty"):
        k_reciprocal_rerank(np.zeros((0, 3)), np.zeros((0, 0)), np.zeros((3, 3)))
    with pytest.raises(ValueError, match="lambda_value"):
        k_reciprocal_rerank(np.zeros((2, 3)), np.zeros((2, 2)), np.zeros((3, 3)), lambda_value=2.0)
