"""Cross-model retrieval on fabricated features: shared spaces retrieve across models, rotated ones do not."""

import pytest
import torch

from compressreid.data.records import ImageRecord
from compressreid.errors import ConfigError
from compressreid.evaluation.cross_model import combine, cross_model_from_features
from compressreid.evaluation.evaluator import EmbeddedSplits, ReIDEvaluator

IDS, GALLERY_PER_ID, DIM = 12, 3, 64


def fabricated(seed=0, noise=1.2):
    """Teacher features: one direction per identity plus noise; one query (camera 0) and three gallery images
    (cameras 1-3) per identity."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(IDS, DIM, generator=g)
    q_records = [ImageRecord(f"/q{i}.jpg", i, 0) for i in range(IDS)]
    g_records = [ImageRecord(f"/g{i}_{k}.jpg", i, k + 1) for i in range(IDS) for k in range(GALLERY_PER_ID)]
    q = centres + noise * torch.randn(IDS, DIM, generator=g)
    gal = centres.repeat_interleave(GALLERY_PER_ID, 0) + noise * torch.randn(IDS * GALLERY_PER_ID, DIM, generator=g)
    return EmbeddedSplits("toy", q, q_records, gal, g_records)


def transformed(splits, matrix):
    return EmbeddedSplits(splits.dataset, splits.q_feats @ matrix, splits.q_records, splits.g_feats @ matrix,
                          splits.g_records)


def rotation(seed=1):
    q, _ = torch.linalg.qr(torch.randn(DIM, DIM, generator=torch.Generator().manual_seed(seed)))
    return q


EVALUATOR = ReIDEvaluator(metric="cosine", roc=False)


def test_identical_features_give_equal_metrics():
    teacher = fabricated()
    result = cross_model_from_features(EVALUATOR, teacher, fabricated())
    summary = result.summary()
    assert set(summary) == {"student_query_teacher_gallery", "student", "teacher"}
    assert summary["student_query_teacher_gallery"] == summary["student"] == summary["teacher"]
    assert 90 < summary["teacher"]["mAP"] < 100  # noisy enough that ranking errors exist to be reproduced


def test_rotated_student_retrieves_well_alone_but_not_against_the_teacher_gallery():
    teacher = fabricated()
    student = transformed(teacher, rotation())
    summary = cross_model_from_features(EVALUATOR, student, teacher).summary()
    # cosine distances are rotation invariant: the student alone ranks exactly as the teacher does
    for metric in ("mAP", "rank1", "mINP"):
        assert summary["student"][metric] == pytest.approx(summary["teacher"][metric], abs=1e-4)
    assert summary["student"]["mAP"] > 90
    # but its queries live in another space than the teacher's gallery: about chance level
    assert summary["student_query_teacher_gallery"]["mAP"] < 40
    assert summary["student_query_teacher_gallery"]["rank1"] < 50


def test_precomputed_self_results_are_used_as_given():
    teacher = fabricated()
    own = EVALUATOR.evaluate_embedded(teacher)
    result = cross_model_from_features(EVALUATOR, teacher, teacher, own=(own, own))
    assert result.query_model is own and result.gallery_model is own
    assert result.summary("a", "b")["a_query_b_gallery"]["mAP"] == pytest.approx(own.metrics["mAP"])


def test_embeddings_of_different_sizes_are_refused():
    teacher = fabricated()
    student = transformed(teacher, torch.eye(DIM)[:, :16])
    with pytest.raises(ConfigError, match="query embeddings have 16 dims, gallery embeddings 64"):
        combine(student, teacher)
    other = EmbeddedSplits("other", teacher.q_feats, teacher.q_records, teacher.g_feats, teacher.g_records)
    with pytest.raises(ConfigError, match="one test set"):
        combine(other, teacher)
