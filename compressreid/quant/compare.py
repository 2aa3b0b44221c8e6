"""Judge a quantized model against the FP32 model it came from, on the same query/gallery images.

The test images are decoded once and kept in memory, because sensitivity analysis and fallback evaluate many
variants of the same model. Metrics come from the same evaluator every stage uses.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F
from yacs.config import CfgNode

from compressreid.data.build import build_test_loader
from compressreid.data.records import DatasetSplits, ImageRecord
from compressreid.evaluation.distance import compute_distance
from compressreid.evaluation.evaluator import EmbeddedSplits, EvaluationResult, ReIDEvaluator

# Neighbours compared by the top-k overlap metric.
OVERLAP_K = 10
# One-sided 95 % normal quantile of rank1_drop_lcb and mAP_drop_lcb.
RANK1_LCB_Z = 1.645
# What rank1_flips reports (gate-able names of a quantize run).
RANK1_FLIP_METRICS = ("rank1_lost", "rank1_gained", "rank1_drop_se", "rank1_drop_lcb")
# What map_drop reports (gate-able names of a quantize run).
MAP_DROP_METRICS = ("mAP_drop_se", "mAP_drop_lcb")


@dataclass
class TestImages:
    """One test set's query and gallery images, decoded and resized once."""

    name: str
    q_images: torch.Tensor
    q_records: List[ImageRecord]
    g_images: torch.Tensor
    g_records: List[ImageRecord]


def load_test_images(cfg: CfgNode, test_set: DatasetSplits) -> TestImages:
    """Decode ``test_set``'s query and gallery at INPUT.SIZE_TEST (unreadable images follow ON_CORRUPT_IMAGE)."""
    loaded = {}
    for split in ("query", "gallery"):
        records = getattr(test_set, split)
        images, kept = [], []
        for batch in build_test_loader(cfg, records):
            images.append(batch["images"])
            kept.extend(records[int(i)] for i in batch["indices"])
        loaded[split] = (torch.cat(images) if images else torch.empty(0), kept)
    return TestImages(test_set.name, *loaded["query"], *loaded["gallery"])


@torch.inference_mode()
def embed_images(model: nn.Module, images: torch.Tensor, batch_size: int = 128, flip: bool = False) -> torch.Tensor:
    """Embeddings of ``images`` in batches; ``flip`` averages with the horizontally flipped image (TEST.FLIP)."""
    model.eval()
    feats = []
    for i in range(0, len(images), batch_size):
        batch = images[i:i + batch_size]
        out = model(batch).float()
        feats.append((out + model(torch.flip(batch, dims=[3])).float()) / 2 if flip else out)
    return torch.cat(feats)


@dataclass
class Embedded:
    """A model's features of one test set and their evaluation."""

    q_feats: torch.Tensor
    g_feats: torch.Tensor
    result: EvaluationResult


def evaluate_cached(evaluator: ReIDEvaluator, model: nn.Module, images: TestImages,
                    batch_size: int = 128) -> Embedded:
    q = embed_images(model, images.q_images, batch_size, evaluator.flip)
    g = embed_images(model, images.g_images, batch_size, evaluator.flip)
    result = evaluator.evaluate_embedded(EmbeddedSplits(images.name, q, images.q_records, g, images.g_records))
    return Embedded(q, g, result)


def topk_overlap(reference: torch.Tensor, candidate: torch.Tensor, k: int = OVERLAP_K) -> float:
    """Mean share (in %) of each query's k nearest gallery entries that two distance matrices agree on."""
    k = min(k, reference.shape[1])
    ref = reference.topk(k, dim=1, largest=False).indices
    cand = candidate.topk(k, dim=1, largest=False).indices
    shared = (ref.unsqueeze(2) == cand.unsqueeze(1)).any(dim=2).float().sum(dim=1)
    return float(100.0 * shared.mean().item() / k)


def rank1_flips(reference: Optional[EvaluationResult], candidate: Optional[EvaluationResult]) -> Dict[str, float]:
    """Rank-1 of two models compared query by query (the queries both evaluated; NaN when either result holds
    no per-query ranks, e.g. a model whose embeddings were not finite, or no query pairs up): ``rank1_lost`` /
    ``rank1_gained`` count the queries the candidate misses where the reference hits and the reverse;
    ``rank1_drop_se`` is the standard error, in points, of the Rank-1 drop over these paired queries (McNemar's: only
    the flipped queries carry it); ``rank1_drop_lcb`` is the drop's one-sided 95 % lower confidence bound, drop -
    1.645 * SE: a rule ``rank1_drop_lcb <= 1.0`` rejects a file only when its Rank-1 is lower by more than 1 point
    beyond the noise of this many queries (keep a plain cap beside it, e.g. ``rank1 >= fp32 - 2.0``: on a few
    queries the bound alone would allow any drop)."""
    a = reference.query_first_match if reference is not None else None
    b = candidate.query_first_match if candidate is not None else None
    unmeasured = dict.fromkeys(RANK1_FLIP_METRICS, float("nan"))  # a rule on them fails, as on any NaN
    if a is None or b is None or len(a) != len(b):
        return unmeasured
    both = (a >= 0) & (b >= 0)
    n = int(both.sum())
    if n == 0:
        return unmeasured
    hit_a, hit_b = a[both] == 0, b[both] == 0
    lost, gained = int((hit_a & ~hit_b).sum()), int((hit_b & ~hit_a).sum())
    net = lost - gained
    se = 100.0 * math.sqrt(max(lost + gained - net * net / n, 0.0)) / n
    drop = 100.0 * net / n
    return {"rank1_lost": float(lost), "rank1_gained": float(gained), "rank1_drop_se": se,
            "rank1_drop_lcb": drop - RANK1_LCB_Z * se}


def map_drop(reference: Optional[EvaluationResult], candidate: Optional[EvaluationResult]) -> Dict[str, float]:
    """mAP of two models compared query by query (the queries both evaluated; NaN when either result holds no
    per-query APs, or fewer than two queries pair up): ``mAP_drop_se`` is the standard error, in points, of the mAP
    drop over these paired queries (the spread of the per-query AP differences over the square root of their number),
    ``mAP_drop_lcb`` the drop's one-sided 95 % lower confidence bound, drop - 1.645 * SE. What a drop of this size
    means on this query set: on 396 synthetic queries a fixed ``mAP >= fp32 - 0.5`` is decided by noise when the SE
    is a third of it."""
    a = reference.query_AP if reference is not None else None
    b = candidate.query_AP if candidate is not None else None
    if a is None or b is None or len(a) != len(b):
        return dict.fromkeys(MAP_DROP_METRICS, float("nan"))  # a rule on them fails, as on any NaN
    drop, se = paired_difference(100.0 * a, 100.0 * b)
    return {"mAP_drop_se": se, "mAP_drop_lcb": drop - RANK1_LCB_Z * se}


def paired_difference(a: np.ndarray, b: np.ndarray) -> Tuple[float, float]:
    """Mean of a - b over the entries finite in both (per-query scores of two models), and its standard error over
    them (NaN with fewer than two)."""
    diff = (a - b)[np.isfinite(a) & np.isfinite(b)]
    if len(diff) < 2:
        return (float(diff.mean()) if len(diff) else float("nan")), float("nan")
    return float(diff.mean()), float(diff.std(ddof=1) / math.sqrt(len(diff)))


def quantization_parity(fp32: Embedded, int8: Embedded, metric: str = "cosine") -> Dict[str, float]:
    """INT8-vs-FP32 agreement: embedding cosine (mean, min over every query and gallery image), the top-10
    neighbour overlap of the queries, and their Rank-1 and mAP compared query by query (``rank1_flips``,
    ``map_drop``)."""
    a = torch.cat([fp32.q_feats, fp32.g_feats])
    b = torch.cat([int8.q_feats, int8.g_feats])
    cosine = F.cosine_similarity(a, b, dim=1)
    overlap = topk_overlap(torch.as_tensor(compute_distance(fp32.q_feats, fp32.g_feats, metric)),
                           torch.as_tensor(compute_distance(int8.q_feats, int8.g_feats, metric)))
    return {"cosine_mean": float(cosine.mean()), "cosine_min": float(cosine.min()), "top10_overlap": overlap,
            **rank1_flips(fp32.result, int8.result), **map_drop(fp32.result, int8.result)}


def summary(result: EvaluationResult, keys: Sequence[str] = ("mAP", "rank1", "rank5", "mINP")) -> Dict[str, float]:
    return {k: float(result.metrics[k]) for k in keys if k in result.metrics}


# Operating points a tracker's fixed match threshold is set at (compressreid.evaluation.roc.threshold_at_fpr).
MATCH_FPRS = ("1e-03", "1e-02")


def match_thresholds(metrics: Dict[str, float]) -> Dict[str, Dict[str, float]]:
    """The cosine-distance threshold and the TPR there at each MATCH_FPRS point ({} without ROC metrics)."""
    return {f"FPR={fpr}": {"threshold": float(metrics[f"threshold@FPR={fpr}"]),
                           "TPR": float(metrics[f"TPR@FPR={fpr}"])}
            for fpr in MATCH_FPRS if f"threshold@FPR={fpr}" in metrics and f"TPR@FPR={fpr}" in metrics}


def threshold_shifts(fp32: Dict[str, float], int8: Dict[str, float]) -> Dict[str, float]:
    """How far the INT8 model's match threshold moved from its FP32 self's (absolute, cosine distance): what a
    tracker integrator must re-tune when swapping the model; a gate may bound it."""
    return {f"threshold_shift@FPR={fpr}": abs(int8[f"threshold@FPR={fpr}"] - fp32[f"threshold@FPR={fpr}"])
            for fpr in MATCH_FPRS if f"threshold@FPR={fpr}" in fp32 and f"threshold@FPR={fpr}" in int8}
