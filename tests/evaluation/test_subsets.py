"""Black-clothes query subset: hand-computed metrics on a tiny distance matrix, and the evaluator's black_* keys."""

import numpy as np
import pytest
import torch

from compressreid.data.records import ImageRecord
from compressreid.evaluation.evaluator import ReIDEvaluator
from compressreid.evaluation.search import topk_search
from compressreid.evaluation.subsets import flagged_queries, subset_metrics_dense, subset_metrics_topk

# Gallery: g0 pid 1 cam 1, g1 pid 2 cam 1, g2 pid 1 cam 2, g3 pid 3 cam 2. Queries are all from camera 0.
G_IDS, G_CAMS = np.array([1, 2, 1, 3]), np.array([1, 1, 2, 2])
Q_IDS, Q_CAMS = np.array([1, 2, 3]), np.array([0, 0, 0])
DISTMAT = np.array([
    [0.5, 0.1, 0.9, 0.3],  # q0 (black): g1, g3, g0*, g2*  -> AP (1/3 + 2/4) / 2, first match at rank 3, INP 2/4
    [0.1, 0.2, 0.3, 0.4],  # q1 (not black)
    [0.2, 0.4, 0.6, 0.1],  # q2 (black): g3* first          -> AP 1, rank-1 hit, INP 1
])
BLACK_ROWS = np.array([0, 2])


def records(ids, cams, black=None, prefix="q"):
    metas = [{} if black is None else {"black_clothes": b} for b in (black or [None] * len(ids))]
    return [ImageRecord(f"/{prefix}{i}.jpg", int(pid), int(cam), meta)
            for i, (pid, cam, meta) in enumerate(zip(ids, cams, metas))]


def test_flagged_queries():
    assert flagged_queries(records(Q_IDS, Q_CAMS)) is None  # no record carries the flag: no subset at all
    assert flagged_queries(records(Q_IDS, Q_CAMS, [True, False, True])).tolist() == [0, 2]
    assert flagged_queries(records(Q_IDS, Q_CAMS, [False, False, False])).tolist() == []


def test_black_subset_metrics_by_hand():
    m = subset_metrics_dense(DISTMAT, Q_IDS, G_IDS, Q_CAMS, G_CAMS, BLACK_ROWS)
    assert m["black_mAP"] == pytest.approx(100 * ((1 / 3 + 2 / 4) / 2 + 1) / 2)
    assert m["black_rank1"] == pytest.approx(50.0)
    assert m["black_rank5"] == pytest.approx(100.0)  # the whole 4-image gallery was ranked
    assert m["black_mINP"] == pytest.approx(100 * (0.5 + 1) / 2)
    assert m["black_num_query"] == 2 and m["black_num_valid_queries"] == 2


def test_subset_without_any_true_match_reports_counts_only():
    g_cams = np.array([0, 1, 0, 0])  # pid 1 and pid 3 only in the queries' own camera: junk, no true match
    m = subset_metrics_dense(DISTMAT, Q_IDS, G_IDS, Q_CAMS, g_cams, BLACK_ROWS)
    assert m == {"black_num_query": 2, "black_num_valid_queries": 0}
    assert subset_metrics_dense(DISTMAT, Q_IDS, G_IDS, Q_CAMS, G_CAMS, np.array([], dtype=np.int64)) == {
        "black_num_query": 0, "black_num_valid_queries": 0}


def test_topk_subset_equals_dense_when_k_covers_the_gallery():
    order = np.argsort(DISTMAT, axis=1, kind="stable")
    topk_dist, topk_idx = np.take_along_axis(DISTMAT, order, 1), order
    dense = subset_metrics_dense(DISTMAT, Q_IDS, G_IDS, Q_CAMS, G_CAMS, BLACK_ROWS)
    assert subset_metrics_topk(topk_dist, topk_idx, Q_IDS, G_IDS, Q_CAMS, G_CAMS, BLACK_ROWS) == dense


def features():
    """1-D features: gallery at 0, 1, 2, 3; queries placed so that the ranking is not trivial."""
    g = torch.tensor([[0.0], [1.0], [2.0], [3.0]])
    q = torch.tensor([[2.6], [1.1], [2.9]])
    return q, g


@pytest.mark.parametrize("topk", [0, 4])
def test_evaluator_reports_black_keys_when_queries_carry_flags(topk):
    q, g = features()
    evaluator = ReIDEvaluator(metric="euclidean", roc=False, topk=topk)
    q_records = records(Q_IDS, Q_CAMS, [True, False, True])
    g_records = records(G_IDS, G_CAMS, [False] * 4, prefix="g")
    result = evaluator.evaluate_features(q, q_records, g, g_records, dataset="toy")
    distmat = torch.cdist(q, g).numpy()
    expected = subset_metrics_dense(distmat, Q_IDS, G_IDS, Q_CAMS, G_CAMS, BLACK_ROWS)
    for key, value in expected.items():
        assert result.metrics[key] == pytest.approx(value)
    # q0 at 2.6: g3 (0.4), g2* (0.6), g1 (1.6), g0* (2.6) -> AP (1/2 + 2/4) / 2; q2 at 2.9: g3* first -> AP 1
    assert result.metrics["black_mAP"] == pytest.approx(100 * (0.5 + 1) / 2)
    assert result.metrics["black_rank1"] == pytest.approx(50.0)
    # the full-query metrics are unchanged by the subset
    assert result.metrics["num_query"] == 3


def test_evaluator_has_no_black_keys_without_flags():
    q, g = features()
    result = ReIDEvaluator(metric="euclidean", roc=False).evaluate_features(
        q, records(Q_IDS, Q_CAMS), g, records(G_IDS, G_CAMS, prefix="g"))
    assert not any(key.startswith("black_") for key in result.metrics)


def test_topk_search_rows_feed_the_subset():
    q, g = features()
    topk_dist, topk_idx = topk_search(q, g, 4, "euclidean")
    m = subset_metrics_topk(topk_dist, topk_idx, Q_IDS, G_IDS, Q_CAMS, G_CAMS, BLACK_ROWS)
    assert m["black_rank1"] == pytest.approx(50.0)  # q2 finds its match first, q0 second (see above)
    assert m["black_mAP"] == pytest.approx(75.0)
