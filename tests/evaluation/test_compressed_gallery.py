"""The int8 gallery: equal to the exact search when its window holds the top k, the error bound behind the proof,
the window-too-small report, identical mAP through the evaluator, and bad options."""

import os

import numpy as np
import pytest
import torch

from compressreid.config import get_cfg
from compressreid.data.records import ImageRecord
from compressreid.errors import ConfigError, DataError
from compressreid.evaluation.evaluator import ReIDEvaluator
from compressreid.evaluation.gallery_search import int8_topk_search, likely_complete, prepare_queries, search_gallery
from compressreid.evaluation.int8_gallery import Int8Gallery
from compressreid.evaluation.row_file import Float32RowFile
from compressreid.evaluation.search import topk_search


def tied_features(rng, n, dim=16, free=6):
    """Entries +-1/4 with most coordinates fixed: exact float32 products and many exact ties."""
    x = (rng.integers(0, 2, size=(n, dim)) * 2 - 1).astype(np.float32) * 0.25
    x[:, free:] = 0.25
    return x


def planted(rng, num_q=60, num_g=1500, dim=32, num_ids=30, per_id=5, noise=1.2):
    """Identities with ``per_id`` gallery images near a centre; the rest of the gallery are distractors."""
    centres = rng.standard_normal((num_ids, dim))
    g_pids = np.concatenate([np.arange(num_ids * per_id) % num_ids, num_ids + np.arange(num_g - num_ids * per_id)])
    q_pids = rng.integers(0, num_ids, num_q)

    def sample(pids):
        base = np.where((pids < num_ids)[:, None], centres[np.minimum(pids, num_ids - 1)], 0.0)
        return (base + noise * rng.standard_normal((len(pids), dim))).astype(np.float32)

    labels = (q_pids, g_pids, rng.integers(0, 3, num_q), rng.integers(0, 3, num_g))
    return sample(q_pids), sample(g_pids), labels


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
@pytest.mark.parametrize("kind", ["tied", "random"])
def test_int8_search_equals_exact_search_when_the_window_covers_the_gallery(metric, kind):
    rng = np.random.default_rng(0)
    if kind == "tied":
        q, g = tied_features(rng, 40), tied_features(rng, 400)
    else:
        q, g = rng.standard_normal((40, 24)).astype(np.float32), rng.standard_normal((400, 24)).astype(np.float32)
    exp_d, exp_i = topk_search(q, g, 30, metric)
    with Int8Gallery.from_features(g, metric, block_rows=64) as gallery:
        res = int8_topk_search(q, gallery, 30, 400, query_batch=16, query_chunk=8)
    np.testing.assert_array_equal(res.topk_idx, exp_i)  # ties too: (distance, gallery index) order
    np.testing.assert_array_equal(res.topk_dist, exp_d)  # the same per-pair FP32 kernel, bit for bit
    assert res.num_unproven == 0 and res.message == ""


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
def test_proven_queries_equal_the_exact_search_and_every_difference_is_flagged(metric):
    rng = np.random.default_rng(1)
    q, g, _ = planted(rng)
    exp_d, exp_i = topk_search(q, g, 20, metric)
    unproven, at_risk = [], []
    with Int8Gallery.from_features(g, metric, block_rows=256) as gallery:
        for window in (20, 25, 30, 60, 1500):
            res = int8_topk_search(q, gallery, 20, window)
            differs = (res.topk_idx != exp_i).any(axis=1)
            assert not (differs & ~res.unproven_query_mask).any(), f"window {window}: a wrong list passed as proven"
            assert not (differs & ~res.at_risk_query_mask).any(), f"window {window}: a wrong list not at risk"
            assert not (res.at_risk_query_mask & ~res.unproven_query_mask).any()  # proven is never at risk
            proven = ~res.unproven_query_mask
            np.testing.assert_array_equal(res.topk_dist[proven], exp_d[proven])
            unproven.append(res.num_unproven)
            at_risk.append(res.num_at_risk)
    assert unproven[0] > 0 and unproven[-1] == 0  # the detection fires at window = k and clears at the gallery
    assert unproven == sorted(unproven, reverse=True) and at_risk == sorted(at_risk, reverse=True)
    assert at_risk[0] > 0 and at_risk[2] < unproven[2]  # the noise estimate clears before the proof does


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
def test_error_bound_holds_for_every_pair_and_the_noise_model_fits(metric):
    rng = np.random.default_rng(2)
    q, g, _ = planted(rng, num_q=30, num_g=700, noise=2.0)
    q[0] = 0.0  # a zero query: every int8 score is 0
    with Int8Gallery.from_features(g, metric, block_rows=128) as gallery:
        qn = prepare_queries(q, gallery)
        cand = gallery.candidates(qn, gallery.num_rows, query_chunk=7, keep_scores=True)
        approx = cand.scores.astype(np.float64) * cand.scale[:, None]
    gn = g / np.linalg.norm(g, axis=1, keepdims=True) if metric == "cosine" else g
    q64, g64 = qn.astype(np.float64), gn.astype(np.float64)[cand.ids]
    exact = np.einsum("qd,qwd->qw", q64, g64)
    if metric == "euclidean":
        exact = 2.0 * exact - np.einsum("qwd,qwd->qw", g64, g64)
    error = np.abs(exact - approx)
    assert (error <= cand.error_bound[:, None]).all()
    assert np.isfinite(cand.error_bound).all() and error.max() > 0.01 * cand.error_bound.max()
    # The noise model's standard deviation is the errors' actual spread over the gallery (query 0 has none).
    rms = np.sqrt((error[1:] ** 2).mean(axis=1))
    np.testing.assert_allclose(rms / cand.noise_sigma[1:], 1.0, atol=0.15)


def test_likely_complete_is_a_six_sigma_margin_at_a_million_rows_capped_by_the_bound():
    worst, sigma, bound = np.zeros(4), np.full(4, 0.1), np.array([1.0, 1.0, 1.0, 0.3])
    s_k = np.array([0.61, 0.59, 0.5, 0.31])
    np.testing.assert_array_equal(likely_complete(worst, sigma, bound, s_k, 10**6), [True, False, False, True])
    assert likely_complete(worst, sigma, bound, s_k, 10)[2]  # fewer rows, smaller margin (z = 3.7)


def test_int8_products_do_not_saturate_at_the_extreme_codes():
    # Every gallery code is +-127 and every query unit +-63: the largest pair sums VPMADDUBSW can be handed.
    rng = np.random.default_rng(3)
    g = (rng.integers(0, 2, size=(300, 64)) * 2 - 1).astype(np.float32)
    q = (rng.integers(0, 2, size=(20, 64)) * 2 - 1).astype(np.float32)
    with Int8Gallery.from_features(g, "cosine") as gallery:
        cand = gallery.candidates(prepare_queries(q, gallery), gallery.num_rows, keep_scores=True)
    expected = np.einsum("qd,qwd->qw", np.sign(q).astype(np.int64) * 63, np.sign(g).astype(np.int64)[cand.ids] * 127)
    np.testing.assert_array_equal(cand.scores, expected)


def test_window_too_small_is_reported_and_a_larger_window_clears_it():
    rng = np.random.default_rng(4)
    q, g, _ = planted(rng)
    small = search_gallery(q, g, 20, "cosine", "int8", window=20)
    assert small.num_at_risk > 0 and small.num_unproven >= small.num_at_risk
    assert small.message.startswith("TEST.RESCORE_WINDOW=20 is likely too small for ")
    assert "\n" not in small.message
    medium = search_gallery(q, g, 20, "cosine", "int8", window=100)
    assert medium.num_at_risk == 0 and medium.message == ""  # unproven by the worst case, but not at risk
    full = search_gallery(q, g, 20, "cosine", "int8", window=len(g))
    assert full.num_unproven == full.num_at_risk == 0 and full.message == ""
    default = search_gallery(q, g, 20, "cosine", "int8")
    assert default.window == 3 * 20  # 0 = 3 x k


def records(pids, cams, prefix):
    return [ImageRecord(f"/{prefix}{i}.jpg", int(p), int(c)) for i, (p, c) in enumerate(zip(pids, cams))]


def test_evaluator_int8_gallery_gives_the_exact_metrics():
    rng = np.random.default_rng(5)
    q, g, (q_pids, g_pids, q_cams, g_cams) = planted(rng, num_q=80, num_g=2000)
    args = (torch.from_numpy(q), records(q_pids, q_cams, "q"), torch.from_numpy(g), records(g_pids, g_cams, "g"))
    exact = ReIDEvaluator(roc=False, topk=30).evaluate_features(*args)
    int8 = ReIDEvaluator(roc=False, topk=30, gallery_storage="int8", rescore_window=450).evaluate_features(*args)
    for key in ("mAP", "rank1", "rank5", "rank10", "mINP", "topk_incomplete_queries"):
        assert int8.metrics[key] == exact.metrics[key], key
    assert int8.metrics["rescore_window"] == 450
    assert int8.metrics["rescore_unproven_queries"] == int8.metrics["rescore_at_risk_queries"] == 0
    assert "rescore_window" not in exact.metrics and int8.notes == exact.notes


def test_evaluator_notes_a_small_k_and_a_small_window():
    rng = np.random.default_rng(6)
    q, g, (q_pids, g_pids, q_cams, g_cams) = planted(rng)
    args = (torch.from_numpy(q), records(q_pids, q_cams, "q"), torch.from_numpy(g), records(g_pids, g_cams, "g"))
    result = ReIDEvaluator(roc=False, topk=2, gallery_storage="int8", rescore_window=2).evaluate_features(*args)
    assert any(note.startswith("k=2 too small") for note in result.notes)
    assert any(note.startswith("TEST.RESCORE_WINDOW=2 is likely too small") for note in result.notes)
    assert result.metrics["rescore_at_risk_queries"] > 0 and result.metrics["rescore_unproven_queries"] > 0


@pytest.mark.parametrize("storage, window, topk, key", [
    ("int4", 0, 10, "TEST.GALLERY_STORAGE"),
    ("int8", 5, 10, "TEST.RESCORE_WINDOW"),
    ("int8", -1, 10, "TEST.RESCORE_WINDOW"),
    ("int8", 100, 0, "TEST.TOPK"),
])
def test_bad_gallery_options_are_one_line_config_errors(storage, window, topk, key):
    cfg = get_cfg()
    cfg.TEST.GALLERY_STORAGE, cfg.TEST.RESCORE_WINDOW, cfg.TEST.TOPK = storage, window, topk
    with pytest.raises(ConfigError, match=key) as err:
        ReIDEvaluator.from_config(cfg)
    assert "\n" not in str(err.value)


def test_bad_int8_inputs():
    rng = np.random.default_rng(7)
    g = rng.standard_normal((50, 8)).astype(np.float32)
    with Int8Gallery.from_features(g) as gallery:
        with pytest.raises(ValueError, match="k <= window"):
            int8_topk_search(g[:3], gallery, 10, 5)
        with pytest.raises(DataError, match="dims differ"):
            int8_topk_search(np.zeros((2, 4)), gallery, 1, 5)
        with pytest.raises(DataError, match="after finalize"):
            gallery.add(g)
    bad = g.copy()
    bad[3, 2] = np.nan
    with pytest.raises(DataError, match="g_feats contains NaN"):
        Int8Gallery.from_features(bad)
    with pytest.raises(DataError, match="empty"), Int8Gallery(8) as empty:
        empty.finalize()


def test_row_file_round_trip_and_cleanup(tmp_path):
    rows = np.arange(70, dtype=np.float32).reshape(10, 7)
    with Float32RowFile(7, str(tmp_path)) as store:
        store.append(rows[:3])
        store.append(rows[3:])
        got = [(first, block.copy()) for first, block in store.blocks(4)]
        assert os.listdir(tmp_path) == []  # no name on disk while open: a killed process leaves nothing behind
        with pytest.raises(DataError, match="float32"):
            store.append(rows.astype(np.float64))
    assert [first for first, _ in got] == [0, 4, 8]
    np.testing.assert_array_equal(np.concatenate([block for _, block in got]), rows)
    assert os.listdir(tmp_path) == []
