"""Market1501 rank metrics: hand-computed cases and a brute-force reference on random matrices with ties."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from compressreid.errors import DataError
from compressreid.evaluation import evaluate_rank, evaluate_rank_detailed


def reference_rank(distmat, q_pids, g_pids, q_camids, g_camids, max_rank=50):
    """Plain-loop Market1501 protocol, written independently of the implementation.

    Ties are ordered by gallery index; a CMC row shorter than max_rank (after junk removal) is padded with 1.
    Returns (cmc, aps, inps, valid_query_indices).
    """
    num_q, num_g = len(distmat), len(distmat[0])
    max_rank = min(max_rank, num_g)
    cmc_sum = [0.0] * max_rank
    aps, inps, valid = [], [], []
    for q in range(num_q):
        order = sorted(range(num_g), key=lambda j: (distmat[q][j], j))
        hits = []
        for j in order:
            if g_pids[j] == q_pids[q] and g_camids[j] == q_camids[q]:
                continue  # junk
            hits.append(g_pids[j] == q_pids[q])
        if not any(hits):
            continue
        valid.append(q)
        found, precisions = 0, []
        for pos, hit in enumerate(hits):
            if hit:
                found += 1
                precisions.append(found / (pos + 1))
                last = pos
        aps.append(sum(precisions) / found)
        inps.append(found / (last + 1))
        first = hits.index(True)
        for r in range(max_rank):
            cmc_sum[r] += 1.0 if r >= first else 0.0
    cmc = [c / len(valid) for c in cmc_sum] if valid else []
    return np.array(cmc), np.array(aps), np.array(inps), valid


def test_single_query_by_hand():
    # Ranked: match, non-match, match, non-match -> AP = (1/1 + 2/3) / 2, INP = 2 matches / rank 3.
    dist = np.array([[0.1, 0.2, 0.3, 0.4]])
    cmc, aps, inps = evaluate_rank(dist, [1], [1, 2, 1, 3], [0], [1, 1, 1, 1])
    assert aps == pytest.approx([(1.0 + 2.0 / 3.0) / 2.0])
    assert inps == pytest.approx([2.0 / 3.0])
    assert cmc.dtype == np.float32 and len(cmc) == 4  # num_g < max_rank shrinks the curve
    np.testing.assert_array_equal(cmc, [1, 1, 1, 1])
    assert isinstance(aps, list) and isinstance(inps, list)


def test_first_match_at_rank_three():
    dist = np.array([[0.1, 0.2, 0.3, 0.4, 0.5]])
    cmc, aps, inps = evaluate_rank(dist, [7], [1, 2, 7, 3, 4], [0], [1] * 5, max_rank=4)
    np.testing.assert_array_equal(cmc, [0, 0, 1, 1])
    assert aps == pytest.approx([1.0 / 3.0])
    assert inps == pytest.approx([1.0 / 3.0])


def test_same_id_same_camera_is_removed_but_other_camera_negatives_stay():
    # Gallery 0 (same pid, same camera) is junk; gallery 1 (other pid, same camera) is a plain negative.
    dist = np.array([[0.0, 0.1, 0.2, 0.3]])
    res = evaluate_rank_detailed(dist, [1], [1, 5, 1, 6], [0], [0, 0, 2, 2])
    np.testing.assert_allclose(res.all_AP, [0.5])
    np.testing.assert_allclose(res.all_INP, [0.5])
    np.testing.assert_array_equal(res.cmc, [0, 1, 1, 1])  # padded: only 3 entries survive junk removal


def test_ties_follow_gallery_index():
    # Equal distances: the stable sort puts the lower gallery index first.
    match_second = evaluate_rank(np.array([[0.5, 0.5]]), [1], [2, 1], [0], [1, 1])
    match_first = evaluate_rank(np.array([[0.5, 0.5]]), [1], [1, 2], [0], [1, 1])
    assert match_second[1] == pytest.approx([0.5])
    assert match_first[1] == pytest.approx([1.0])


def test_skipped_queries_are_reported():
    dist = np.zeros((3, 3))
    # Query 1's only same-pid gallery image shares its camera; query 2's pid is absent.
    res = evaluate_rank_detailed(dist, [1, 2, 9], [1, 2, 3], [0, 0, 0], [1, 0, 1])
    np.testing.assert_array_equal(res.valid_query_mask, [True, False, False])
    np.testing.assert_array_equal(res.skipped_query_indices, [1, 2])
    assert res.num_valid == 1 and len(res.all_AP) == 1
    summary = res.as_dict()
    assert summary["num_skipped_queries"] == 2 and summary["mAP"] == pytest.approx(1.0)


def test_convenience_ranks_and_short_gallery():
    dist = np.array([[0.3, 0.1, 0.2]])
    res = evaluate_rank_detailed(dist, [1], [1, 2, 3], [0], [1, 1, 1])
    assert res.rank1 == 0.0 and res.rank(3) == 1.0
    # The whole 3-image gallery was ranked, so rank-5/10 equal the last CMC value.
    assert res.rank5 == 1.0 and res.rank10 == 1.0
    cut = evaluate_rank_detailed(np.tile(dist, (1, 4)), [1], [1, 2, 3] * 4, [0], [1] * 12, max_rank=3)
    assert np.isnan(cut.rank5)


def test_string_pids():
    dist = np.array([[0.1, 0.2]])
    _, aps, _ = evaluate_rank(dist, ["a"], ["b", "a"], [0], [1, 1])
    assert aps == pytest.approx([0.5])


def test_mean_metrics():
    dist = np.array([[0.1, 0.2], [0.1, 0.2]])
    res = evaluate_rank_detailed(dist, [1, 2], [1, 2], [0, 0], [1, 1])
    assert res.mAP == pytest.approx(0.75) and res.mINP == pytest.approx(0.75)
    np.testing.assert_allclose(res.cmc, [0.5, 1.0])


@pytest.mark.parametrize(
    "args, message",
    [
        ((np.zeros((0, 3)), [], [1, 2, 3], [], [0, 0, 0]), "empty"),
        ((np.zeros((2, 0)), [1, 2], [], [0, 0], []), "empty"),
        ((np.zeros((2, 3)), [1], [1, 2, 3], [0, 0], [1, 1, 1]), "q_pids"),
        ((np.zeros((2, 3)), [1, 2], [1, 2], [0, 0], [1, 1, 1]), "g_pids"),
        ((np.zeros((2, 3)), [1, 2], [1, 2, 3], [0, 0], [1, 1]), "g_camids"),
        ((np.zeros(3), [1], [1, 2, 3], [0], [1, 1, 1]), "2-D"),
        ((np.full((1, 2), np.nan), [1], [1, 2], [0], [1, 1]), "NaN"),
        ((np.zeros((2, 2)), [1, 2], [3, 4], [0, 0], [1, 1]), "all 2 queries have no true match in the gallery"),
    ],
)
def test_bad_inputs_raise_data_error(args, message):
    with pytest.raises(DataError, match=message):
        evaluate_rank(*args)


@st.composite
def retrieval_problem(draw):
    num_q = draw(st.integers(1, 6))
    num_g = draw(st.integers(1, 70))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    # Few distinct integer distances, identities and cameras: plenty of ties, junk and skipped queries.
    dist = rng.integers(0, draw(st.integers(1, 6)), size=(num_q, num_g)).astype(np.float32)
    num_ids, num_cams = draw(st.integers(1, 5)), draw(st.integers(1, 3))
    q_pids, g_pids = rng.integers(0, num_ids, num_q), rng.integers(0, num_ids, num_g)
    q_camids, g_camids = rng.integers(0, num_cams, num_q), rng.integers(0, num_cams, num_g)
    return dist, (q_pids, g_pids, q_camids, g_camids), draw(st.integers(1, 60))


@settings(max_examples=60, deadline=None)
@given(retrieval_problem())
def test_matches_brute_force_reference(problem):
    dist, (q_pids, g_pids, q_camids, g_camids), max_rank = problem
    ref_cmc, ref_ap, ref_inp, ref_valid = reference_rank(dist.tolist(), q_pids, g_pids, q_camids, g_camids, max_rank)
    if not ref_valid:
        with pytest.raises(DataError, match="no true match"):
            evaluate_rank(dist, q_pids, g_pids, q_camids, g_camids, max_rank)
        return
    res = evaluate_rank_detailed(dist, q_pids, g_pids, q_camids, g_camids, max_rank)
    np.testing.assert_array_equal(np.flatnonzero(res.valid_query_mask), ref_valid)
    np.testing.assert_allclose(res.all_AP, ref_ap, rtol=0, atol=1e-12)
    np.testing.assert_allclose(res.all_INP, ref_inp, rtol=0, atol=1e-12)
    np.testing.assert_allclose(res.cmc, ref_cmc, rtol=0, atol=1e-6)
    assert res.cmc.dtype == np.float32 and len(res.cmc) == min(max_rank, dist.shape[1])


def test_blocked_ranking_matches_single_block(monkeypatch):
    rng = np.random.default_rng(3)
    dist = rng.random((40, 30))
    labels = (rng.integers(0, 4, 40), rng.integers(0, 4, 30), rng.integers(0, 2, 40), rng.integers(0, 2, 30))
    whole = evaluate_rank_detailed(dist, *labels)
    monkeypatch.setattr("compressreid.evaluation.rank._BLOCK_ELEMENTS", 64)  # 2 query rows per block
    blocked = evaluate_rank_detailed(dist, *labels)
    np.testing.assert_array_equal(whole.all_AP, blocked.all_AP)
    np.testing.assert_array_equal(whole.cmc, blocked.cmc)
