"""Pairwise verification metrics: ROC over cross-camera query-gallery pairs, TPR at fixed FPR, distance histograms."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Optional, Sequence, Tuple

import numpy as np
from sklearn.metrics import roc_auc_score, roc_curve

from compressreid.errors import DataError
from compressreid.evaluation.rank import check_labels


@dataclass(eq=False)
class RocResult:
    """ROC of "same identity" vs distance over cross-camera pairs.

    Attributes:
        fpr, tpr: curve points, increasing.
        thresholds: distance thresholds; a pair is called "same identity" when its distance is ``<=`` the
            threshold (the first is ``-inf``: nothing accepted).
        auc: area under the curve.
        num_pos, num_neg: positive and negative pairs used.
    """

    fpr: np.ndarray
    tpr: np.ndarray
    thresholds: np.ndarray
    auc: float
    num_pos: int
    num_neg: int


def _pair_labels(distmat, q_pids, g_pids, q_camids, g_camids) -> Tuple[np.ndarray, np.ndarray]:
    """Flattened (distance, is_same_identity) of every query-gallery pair seen by different cameras."""
    distmat = np.asarray(distmat)
    if distmat.ndim != 2:
        raise DataError(f"distmat must be 2-D (num_query, num_gallery), got shape {distmat.shape}")
    q_pids, g_pids, q_camids, g_camids = check_labels(*distmat.shape, q_pids, g_pids, q_camids, g_camids)
    if np.isnan(distmat).any():
        raise DataError("distmat contains NaN distances")
    # Same-camera pairs are excluded whatever their identity, mirroring the junk rule of the rank protocol.
    cross = q_camids[:, None] != g_camids[None, :]
    same = q_pids[:, None] == g_pids[None, :]
    return distmat[cross], same[cross]


def distance_distributions(distmat, q_pids, g_pids, q_camids, g_camids) -> Tuple[np.ndarray, np.ndarray]:
    """Distances of positive (same identity) and negative pairs, same-camera pairs excluded.

    Returns:
        ``(pos, neg)`` 1-D arrays of distances.

    Raises:
        DataError: bad shapes or NaN distances.
    """
    dist, same = _pair_labels(distmat, q_pids, g_pids, q_camids, g_camids)
    return dist[same], dist[~same]


def roc_from_distmat(
    distmat, q_pids, g_pids, q_camids, g_camids, max_negatives: Optional[int] = None, seed: int = 0
) -> RocResult:
    """ROC of verifying "same identity" by thresholding the distance (score = -distance).

    Args:
        distmat: (num_query, num_gallery) distances.
        q_pids, g_pids, q_camids, g_camids: 1-D labels.
        max_negatives: if set, a uniform random subset of this many negative pairs is used, bounding memory on
            large splits (negatives outnumber positives by orders of magnitude, so FPR stays well estimated).
        seed: seed of that subset, so results are reproducible.

    Raises:
        DataError: bad shapes, NaN distances, or no positive or no negative cross-camera pair.
    """
    dist, same = _pair_labels(distmat, q_pids, g_pids, q_camids, g_camids)
    pos, neg = dist[same], dist[~same]
    if len(pos) == 0 or len(neg) == 0:
        raise DataError(f"ROC needs both classes: {len(pos)} positive and {len(neg)} negative cross-camera pairs")
    if max_negatives is not None and len(neg) > max_negatives:
        neg = neg[np.random.default_rng(seed).choice(len(neg), size=max_negatives, replace=False)]
    labels = np.concatenate([np.ones(len(pos), dtype=bool), np.zeros(len(neg), dtype=bool)])
    scores = -np.concatenate([pos, neg]).astype(np.float64)
    fpr, tpr, thr = roc_curve(labels, scores)
    return RocResult(
        fpr=fpr,
        tpr=tpr,
        thresholds=-thr,
        auc=float(roc_auc_score(labels, scores)),
        num_pos=len(pos),
        num_neg=len(neg),
    )


def tpr_at_fpr(roc: RocResult, targets: Sequence[float] = (1e-4, 1e-3, 1e-2)) -> Dict[str, float]:
    """Highest TPR reachable with FPR at most each target (no interpolation, so never optimistic).

    Returns:
        e.g. ``{"TPR@FPR=1e-04": 0.41, "TPR@FPR=1e-03": 0.63, "TPR@FPR=1e-02": 0.85}``.
    """
    out = {}
    for target in targets:
        ok = roc.fpr <= target
        out[f"TPR@FPR={target:.0e}"] = float(roc.tpr[ok].max()) if ok.any() else 0.0
    return out


def threshold_at_fpr(roc: RocResult, targets: Sequence[float] = (1e-4, 1e-3, 1e-2)) -> Dict[str, float]:
    """The distance threshold a tracker should match below to stay at each false-positive rate: the largest
    threshold whose FPR is at most the target (the operating point of ``tpr_at_fpr``'s TPR).

    sklearn's first threshold accepts nothing (distance -inf here); a target no finite threshold meets gives NaN.

    Returns:
        e.g. ``{"threshold@FPR=1e-03": 0.41, ...}`` (cosine distance when the evaluation metric is cosine).
    """
    out = {}
    finite = np.isfinite(roc.thresholds)
    for target in targets:
        ok = (roc.fpr <= target) & finite
        out[f"threshold@FPR={target:.0e}"] = float(roc.thresholds[ok].max()) if ok.any() else float("nan")
    return out
