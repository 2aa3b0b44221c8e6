"""INT8-vs-FP32 comparison (compressreid.quant.compare): top-k neighbour overlap on hand-built distances, embedding
cosine, and cached evaluation of in-memory test images with the shared evaluator."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from compressreid.config import get_cfg
from compressreid.data.build import load_test_sets
from compressreid.evaluation.evaluator import EvaluationResult, ReIDEvaluator
from compressreid.gates import check_gates
from compressreid.quant.compare import (Embedded, evaluate_cached, load_test_images, map_drop, paired_difference,
                                       quantization_parity, rank1_flips, topk_overlap)

# Two queries, four gallery entries; each row's ranking is 0 < 1 < 2 < 3 in this matrix.
REFERENCE = torch.tensor([[0.0, 1.0, 2.0, 3.0],
                          [0.0, 1.0, 2.0, 3.0]])


def test_identical_rankings_overlap_fully():
    assert topk_overlap(REFERENCE, REFERENCE.clone(), k=2) == 100.0
    assert topk_overlap(REFERENCE, REFERENCE * 7 + 1, k=2) == 100.0  # a monotone rescaling keeps the ranking


def test_disjoint_top_k_overlaps_nothing():
    assert topk_overlap(REFERENCE, REFERENCE.flip(1), k=2) == 0.0


def test_partial_overlap_is_the_mean_share_per_query():
    candidate = torch.tensor([[0.0, 3.0, 1.0, 2.0],    # top-2 {0, 2}: shares 1 of {0, 1}
                              [3.0, 2.0, 1.0, 0.0]])   # top-2 {3, 2}: shares 0
    assert topk_overlap(REFERENCE, candidate, k=2) == pytest.approx(25.0)
    assert topk_overlap(REFERENCE, candidate, k=1) == pytest.approx(50.0)  # query 0 agrees on its first neighbour


def test_k_larger_than_the_gallery_compares_the_whole_gallery():
    assert topk_overlap(REFERENCE, REFERENCE.flip(1), k=10) == 100.0


def _embedded(q: torch.Tensor, g: torch.Tensor) -> Embedded:
    return Embedded(q, g, result=None)


def test_parity_of_identical_features_is_perfect():
    generator = torch.Generator().manual_seed(0)
    q, g = torch.randn(5, 8, generator=generator), torch.randn(12, 8, generator=generator)
    parity = quantization_parity(_embedded(q, g), _embedded(q.clone(), g.clone()))
    assert parity["cosine_mean"] == pytest.approx(1.0, abs=1e-6)
    assert parity["cosine_min"] == pytest.approx(1.0, abs=1e-6)
    assert parity["top10_overlap"] == 100.0
    scaled = quantization_parity(_embedded(q, g), _embedded(3 * q, 3 * g))  # cosine ignores the scale
    assert scaled["cosine_min"] == pytest.approx(1.0, abs=1e-6) and scaled["top10_overlap"] == 100.0


def test_parity_sees_a_damaged_embedding():
    generator = torch.Generator().manual_seed(1)
    q, g = torch.randn(5, 8, generator=generator), torch.randn(30, 8, generator=generator)
    damaged_g = g.clone()
    damaged_g[0] = -damaged_g[0]  # one gallery embedding flipped: cosine -1 for it
    parity = quantization_parity(_embedded(q, g), _embedded(q, damaged_g))
    assert parity["cosine_min"] == pytest.approx(-1.0, abs=1e-6)
    assert parity["cosine_mean"] == pytest.approx((34 - 1) / 35, abs=1e-6)
    noisy = quantization_parity(_embedded(q, g), _embedded(q, torch.randn(30, 8, generator=generator)))
    assert noisy["top10_overlap"] < 100.0


class _MeanColour(nn.Module):
    """A parameter-free embedding: the mean colour of each image's upper and lower half."""

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        half = images.shape[2] // 2
        return torch.cat([images[:, :, :half].mean((2, 3)), images[:, :, half:].mean((2, 3))], dim=1)


def test_cached_images_evaluate_like_the_evaluator(tmp_path):
    cfg = get_cfg()
    cfg.merge_from_list([
        "DATASETS.NAMES", '("Synthetic",)', "DATASETS.TESTS", '("Synthetic",)', "DATASETS.ROOT", str(tmp_path),
        "DATASETS.SYNTHETIC.NUM_TRAIN_IDS", "4", "DATASETS.SYNTHETIC.NUM_TEST_IDS", "5",
        "DATASETS.SYNTHETIC.NUM_DISTRACTORS", "3", "DATASETS.SYNTHETIC.SIZE", "[32, 16]",
        "INPUT.SIZE_TEST", "[32, 16]", "DATALOADER.NUM_WORKERS", "0", "TEST.ROC.ENABLED", "False",
    ])
    (test_set,) = load_test_sets(cfg)
    images = load_test_images(cfg, test_set)
    assert images.name == "Synthetic"
    assert len(images.q_images) == len(images.q_records) == len(test_set.query)
    assert len(images.g_images) == len(images.g_records) == len(test_set.gallery)
    assert images.q_images.shape[1:] == (3, 32, 16)
    evaluator = ReIDEvaluator.from_config(cfg)
    model = _MeanColour()
    cached = evaluate_cached(evaluator, model, images, batch_size=4)  # batching must not change anything
    assert cached.q_feats.shape == (len(test_set.query), 6)
    direct = evaluator.evaluate_features(model(images.q_images), images.q_records, model(images.g_images),
                                         images.g_records, dataset="Synthetic")
    assert cached.result.metrics["mAP"] == pytest.approx(direct.metrics["mAP"])
    assert 0.0 < cached.result.metrics["mAP"] <= 100.0
    parity = quantization_parity(cached, cached, cfg.TEST.METRIC)
    assert parity["top10_overlap"] == 100.0
    assert parity["rank1_lost"] == parity["rank1_gained"] == parity["rank1_drop_lcb"] == 0.0
    # the per-query first matches reproduce the evaluator's Rank-1
    first = cached.result.query_first_match
    assert len(first) == len(images.q_records)
    assert 100.0 * np.mean(first[first >= 0] == 0) == pytest.approx(cached.result.metrics["rank1"])
    # and the per-query APs its mAP, skipped queries NaN where the first matches say -1
    ap = cached.result.query_AP
    assert len(ap) == len(images.q_records) and np.array_equal(np.isnan(ap), first < 0)
    assert 100.0 * np.nanmean(ap) == pytest.approx(cached.result.metrics["mAP"])
    assert parity["mAP_drop_se"] == parity["mAP_drop_lcb"] == 0.0


def _ranked(first_match) -> EvaluationResult:
    return EvaluationResult("Synthetic", {}, [], [], query_first_match=np.asarray(first_match, dtype=np.int64))


def test_rank1_flips_count_the_queries_each_model_alone_gets_right():
    # 20 queries: both hit 10, both miss 4, the candidate loses 4 and gains 1, one query skipped by the reference
    reference = [0] * 10 + [2] * 4 + [0] * 4 + [1] + [-1]
    candidate = [0] * 10 + [3] * 4 + [1] * 4 + [0] + [0]
    flips = rank1_flips(_ranked(reference), _ranked(candidate))
    assert flips["rank1_lost"] == 4 and flips["rank1_gained"] == 1
    n, net = 19, 3  # the skipped query is compared by neither
    se = 100.0 * math.sqrt(5 - net * net / n) / n
    assert flips["rank1_drop_se"] == pytest.approx(se)
    assert flips["rank1_drop_lcb"] == pytest.approx(100.0 * net / n - 1.645 * se)
    # the bound falls below the drop by the noise, and rises with it when the flips all go one way
    one_way = rank1_flips(_ranked([0] * 19), _ranked([0] * 16 + [1] * 3))
    assert one_way["rank1_lost"] == 3 and one_way["rank1_gained"] == 0
    assert one_way["rank1_drop_lcb"] > flips["rank1_drop_lcb"]


def test_rank1_flips_of_identical_rankings_are_zero_and_nan_without_per_query_ranks():
    same = rank1_flips(_ranked([0, 1, 0, 4]), _ranked([0, 1, 0, 4]))
    assert same == {"rank1_lost": 0.0, "rank1_gained": 0.0, "rank1_drop_se": 0.0, "rank1_drop_lcb": 0.0}
    # not measured (a model whose embeddings were not finite has no per-query ranks, other queries pair nothing):
    # NaN, which every rule on it fails, not a missing metric that stops the run
    for flips in (rank1_flips(None, _ranked([0])), rank1_flips(_ranked([0, 0]), _ranked([0])),
                  rank1_flips(_ranked([-1]), _ranked([0]))):
        assert set(flips) == {"rank1_lost", "rank1_gained", "rank1_drop_se", "rank1_drop_lcb"}
        assert all(math.isnan(v) for v in flips.values())
        assert not check_gates(["rank1_drop_lcb <= 1.0"], flips)[0].passed


def test_rank1_lower_bound_separates_a_real_drop_from_noise():
    # 400 queries, 12 lost net (3 points): all one way is beyond noise; 36 lost against 24 gained is not
    steady = rank1_flips(_ranked([0] * 400), _ranked([0] * 388 + [1] * 12))
    noisy = rank1_flips(_ranked([0] * 340 + [1] * 24 + [0] * 36), _ranked([0] * 340 + [0] * 24 + [1] * 36))
    assert steady["rank1_lost"] - steady["rank1_gained"] == noisy["rank1_lost"] - noisy["rank1_gained"] == 12
    assert steady["rank1_drop_lcb"] > 1.0 > 0.0 > noisy["rank1_drop_lcb"]


def _scored(ap) -> EvaluationResult:
    return EvaluationResult("Synthetic", {}, [], [], query_AP=np.asarray(ap, dtype=np.float64))


def test_map_drop_pairs_the_queries_and_bounds_the_drop_by_their_spread():
    rng = np.random.default_rng(0)
    reference = rng.uniform(0.2, 0.9, 400)
    shift = rng.normal(0.005, 0.05, 400)  # the candidate loses 0.5 points on average, noisily
    candidate = reference - shift
    reference[7] = np.nan  # a query the reference skipped is compared by neither
    drop = map_drop(_scored(reference), _scored(candidate))
    paired = 100.0 * np.delete(shift, 7)
    se = paired.std(ddof=1) / np.sqrt(399)
    assert drop["mAP_drop_se"] == pytest.approx(se)
    assert drop["mAP_drop_lcb"] == pytest.approx(paired.mean() - 1.645 * se)
    # a 0.5-point drop with a tenth of that spread is bounded near 0.5; with the spread above, near 0
    steady = map_drop(_scored(reference), _scored(reference - (0.005 + (shift - shift.mean()) / 10)))
    assert steady["mAP_drop_se"] == pytest.approx(se / 10)
    assert steady["mAP_drop_lcb"] > 0.45 and 0.0 < drop["mAP_drop_lcb"] < 0.1


def test_map_drop_of_identical_models_is_zero_and_nan_without_per_query_aps():
    assert map_drop(_scored([0.5, 0.25, 1.0]), _scored([0.5, 0.25, 1.0])) == {"mAP_drop_se": 0.0, "mAP_drop_lcb": 0.0}
    for drop in (map_drop(None, _scored([0.5])), map_drop(_scored([0.5, 0.4]), _scored([0.5])),
                 map_drop(_scored([0.5, np.nan]), _scored([0.5, 0.7]))):  # the last: one paired query, no spread
        assert set(drop) == {"mAP_drop_se", "mAP_drop_lcb"} and all(math.isnan(v) for v in drop.values())
        assert not check_gates(["mAP_drop_lcb <= 0.5"], drop)[0].passed


def test_paired_difference_is_the_mean_over_queries_valid_in_both_with_its_standard_error():
    a = np.array([50.0, 60.0, np.nan, 80.0, 10.0])
    b = np.array([40.0, 70.0, 30.0, np.nan, 0.0])
    mean, se = paired_difference(a, b)
    diff = np.array([10.0, -10.0, 10.0])
    assert mean == pytest.approx(diff.mean())
    assert se == pytest.approx(diff.std(ddof=1) / np.sqrt(3))
    assert paired_difference(a, a) == (0.0, 0.0)
    assert np.isnan(paired_difference(np.full(3, np.nan), np.zeros(3))).all()  # a broken model: nothing paired
