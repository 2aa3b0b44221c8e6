"""INT8-vs-FP32 comparison (compressreid.quant.compare): top-k neighbour overlap on hand-built distances, embedding
cosine, and cached evaluation of in-memory test images with the shared evaluator."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from compressreid.config import get_cfg
from compressreid.data.build import load_test_sets
from compressreid.evaluation.evaluator import ReIDEvaluator
from compressreid.quant.compare import Embedded, evaluate_cached, load_test_images, quantization_parity, topk_overlap

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
    assert quantization_parity(cached, cached, cfg.TEST.METRIC)["top10_overlap"] == 100.0
