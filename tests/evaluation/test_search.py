"""Exact top-k search and top-k rank metrics: agreement with the dense path, ties, incomplete queries."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from compressreid.errors import DataError
from compressreid.evaluation import compute_distance, evaluate_rank_detailed, evaluate_rank_topk, topk_search


def exact_features(rng, n, dim=16, free=6):
    """Unit vectors with entries +-1/4: every distance is exact in float32, and fixing most coordinates makes
    many gallery entries identical, i.e. exact ties in both faiss and torch."""
    x = (rng.integers(0, 2, size=(n, dim)) * 2 - 1).astype(np.float32) * 0.25
    x[:, free:] = 0.25
    return x


def dense_topk(dist, k):
    idx = np.argsort(dist, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(dist, idx, axis=1), idx


def assert_same_result(a, b):
    np.testing.assert_array_equal(a.valid_query_mask, b.valid_query_mask)
    np.testing.assert_array_equal(a.all_AP, b.all_AP)
    np.testing.assert_array_equal(a.all_INP, b.all_INP)
    np.testing.assert_array_equal(a.cmc, b.cmc)
    np.testing.assert_array_equal(a.first_match, b.first_match)
    assert np.mean(a.first_match == 0) == pytest.approx(a.rank1)  # a Rank-1 hit is a first match at rank 0


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
@pytest.mark.parametrize("k, shard", [(1, 64), (7, 64), (50, 1000), (400, 64), (1000, 128)])
@pytest.mark.parametrize("margin", [0, 16])  # 0: ties at the cut leave rows unproven, re-scored in full
def test_topk_search_equals_stable_dense_sort_with_ties(metric, k, shard, margin):
    rng = np.random.default_rng(0)
    q, g = exact_features(rng, 40), exact_features(rng, 400)
    dist = compute_distance(q, g, metric)
    top_d, top_i = topk_search(q, g, k, metric, query_chunk=16, gallery_block=shard, margin=margin)
    exp_d, exp_i = dense_topk(dist, min(k, 400))
    np.testing.assert_array_equal(top_i, exp_i)
    np.testing.assert_allclose(top_d, exp_d, atol=1e-6)
    assert top_d.dtype == np.float32 and top_i.dtype == np.int64


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
def test_topk_search_random_features_and_untouched_inputs(metric):
    rng = np.random.default_rng(1)
    q = torch.from_numpy(rng.standard_normal((30, 32)).astype(np.float32))
    g = rng.standard_normal((500, 32)).astype(np.float32)
    q0, g0 = q.clone(), g.copy()
    top_d, top_i = topk_search(q, g, 20, metric, gallery_block=128)
    exp_d, exp_i = dense_topk(compute_distance(q, g, metric), 20)
    np.testing.assert_array_equal(top_i, exp_i)
    np.testing.assert_allclose(top_d, exp_d, atol=1e-5)
    assert torch.equal(q, q0) and np.array_equal(g, g0)


def planted(rng, num_q=30, num_g=300, num_ids=10, dim=16, free=8):
    q, g = exact_features(rng, num_q, dim, free), exact_features(rng, num_g, dim, free)
    labels = (rng.integers(0, num_ids, num_q), rng.integers(0, num_ids, num_g),
              rng.integers(0, 3, num_q), rng.integers(0, 3, num_g))
    return q, g, labels


def test_topk_metrics_equal_dense_when_k_covers_gallery():
    rng = np.random.default_rng(2)
    q, g, labels = planted(rng)
    dense = evaluate_rank_detailed(compute_distance(q, g), *labels)
    topk = evaluate_rank_topk(*topk_search(q, g, 10_000), *labels)
    assert_same_result(topk, dense)
    assert topk.num_incomplete == 0 and topk.message == "" and topk.k == 300


def test_topk_metrics_equal_dense_when_all_matches_inside_k():
    rng = np.random.default_rng(4)
    # Two identities whose gallery images sit right next to their queries; every other image is far away.
    g = rng.standard_normal((200, 8)).astype(np.float32) * 0.1 + 5.0
    g[[3, 50, 120]] = [[0.0] * 8, [0.05] * 8, [0.1] * 8]
    g[[7, 199]] = [[-1.0] * 8, [-1.05] * 8]
    q = np.array([[0.01] * 8, [-1.01] * 8], dtype=np.float32)
    g_pids = np.arange(200) + 10
    g_pids[[3, 50, 120]] = 1
    g_pids[[7, 199]] = 2
    labels = ([1, 2], g_pids, [0, 0], np.ones(200, dtype=int))
    dense = evaluate_rank_detailed(compute_distance(q, g, "euclidean"), *labels)
    topk = evaluate_rank_topk(*topk_search(q, g, 5, "euclidean"), *labels)
    assert topk.num_incomplete == 0
    assert_same_result(topk, dense)


def test_incomplete_queries_by_hand():
    # Matches of the query at ranks 1, 4 and 6 of a 6-image gallery; with k = 2 only the first is seen.
    dist = np.array([[0.1, 0.2, 0.3, 0.4, 0.5, 0.6]])
    labels = ([1], [1, 2, 3, 1, 4, 1], [0], [1] * 6)
    top_d, top_i = dense_topk(dist, 2)
    res = evaluate_rank_topk(top_d, top_i, *labels)
    assert res.num_incomplete == 1 and list(res.incomplete_query_indices) == [0]
    assert res.message == (
        "k=2 too small: 1 of 1 queries have true matches beyond the top 2; their AP is a lower bound"
    )
    # Worst case puts the two missing matches at ranks 5 and 6.
    assert res.all_AP[0] == pytest.approx((1 + 2 / 5 + 3 / 6) / 3)
    assert res.all_INP[0] == pytest.approx(3 / 6)
    dense = evaluate_rank_detailed(dist, *labels)
    assert res.all_AP[0] < dense.all_AP[0] == pytest.approx((1 + 2 / 4 + 3 / 6) / 3)
    assert res.as_dict()["num_incomplete_queries"] == 1


def test_query_without_match_in_topk_gets_worst_case_cmc():
    dist = np.array([[0.1, 0.2, 0.3]])
    res = evaluate_rank_topk(*dense_topk(dist, 1), [1], [2, 3, 1], [0], [1, 1, 1])
    np.testing.assert_array_equal(res.cmc, [0, 0, 1])  # the only match can be no lower than rank 3
    assert res.all_AP[0] == pytest.approx(1 / 3)


@st.composite
def topk_problem(draw):
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    num_q, num_g = draw(st.integers(1, 6)), draw(st.integers(1, 60))
    dist = rng.integers(0, draw(st.integers(1, 8)), size=(num_q, num_g)).astype(np.float32)
    num_ids = draw(st.integers(1, 5))
    labels = (rng.integers(0, num_ids, num_q), rng.integers(0, num_ids, num_g),
              rng.integers(0, 2, num_q), rng.integers(0, 2, num_g))
    # Shuffle columns inside each top-k row: the evaluator must restore (distance, index) order itself.
    return dist, labels, draw(st.integers(1, num_g)), draw(st.integers(1, 60)), rng


@settings(max_examples=50, deadline=None)
@given(topk_problem())
def test_topk_bounds_and_exactness_against_dense(problem):
    dist, labels, k, max_rank, rng = problem
    try:
        dense = evaluate_rank_detailed(dist, *labels, max_rank=max_rank)
    except DataError:
        return
    top_d, top_i = dense_topk(dist, k)
    perm = rng.permutation(k)
    res = evaluate_rank_topk(top_d[:, perm], top_i[:, perm], *labels, max_rank=max_rank)
    np.testing.assert_array_equal(res.valid_query_mask, dense.valid_query_mask)
    complete = ~res.incomplete_query_mask[res.valid_query_mask]
    np.testing.assert_array_equal(res.all_AP[complete], dense.all_AP[complete])
    np.testing.assert_array_equal(res.all_INP[complete], dense.all_INP[complete])
    assert np.all(res.all_AP <= dense.all_AP + 1e-12) and np.all(res.all_INP <= dense.all_INP + 1e-12)
    assert np.all(res.cmc <= dense.cmc)
    if res.num_incomplete == 0:
        assert_same_result(res, dense)


def test_bad_topk_inputs():
    labels = ([1], [1, 2], [0], [1, 1])
    with pytest.raises(DataError, match="outside"):
        evaluate_rank_topk([[0.1, 0.2]], [[0, -1]], *labels)
    with pytest.raises(DataError, match="repeats"):
        evaluate_rank_topk([[0.1, 0.2]], [[0, 0]], *labels)
    with pytest.raises(DataError, match="equal non-empty 2-D"):
        evaluate_rank_topk([[0.1, 0.2]], [[0]], *labels)
    with pytest.raises(DataError, match="q_pids"):
        evaluate_rank_topk([[0.1], [0.2]], [[0], [1]], *labels)
    with pytest.raises(DataError, match="no true match"):
        evaluate_rank_topk([[0.1]], [[1]], [1], [3, 4], [0], [1, 1])
    with pytest.raises(DataError, match="dims differ"):
        topk_search(np.zeros((2, 3)), np.zeros((4, 5)), 2)
    with pytest.raises(ValueError, match="k must be"):
        topk_search(np.zeros((2, 3)), np.zeros((4, 3)), 0)
    with pytest.raises(DataError, match="NaN"):
        topk_search(np.zeros((2, 3)), np.full((4, 3), np.nan), 2)
