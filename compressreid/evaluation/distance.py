"""Dense query x gallery distance matrices (cosine or Euclidean), computed in chunks with torch."""

from __future__ import annotations

from typing import Union

import numpy as np
import torch
import torch.nn.functional as F

from compressreid.errors import DataError

Features = Union[np.ndarray, torch.Tensor]
METRICS = ("cosine", "euclidean")


def as_feature_tensor(feats: Features, name: str) -> torch.Tensor:
    """A 2-D float32 CPU tensor view/copy of ``feats``; never shares storage that callers modify through us.

    Raises:
        DataError: not 2-D, empty, or containing NaN/inf.
    """
    t = feats.detach() if isinstance(feats, torch.Tensor) else torch.as_tensor(np.asarray(feats))
    t = t.to(device="cpu", dtype=torch.float32)
    if t.dim() != 2:
        raise DataError(f"{name} must be 2-D (num, dim), got shape {tuple(t.shape)}")
    if t.shape[0] == 0:
        raise DataError(f"{name} is empty")
    if not torch.isfinite(t).all():
        raise DataError(f"{name} contains NaN or inf")
    return t


def check_metric(metric: str) -> None:
    if metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r}; expected one of {METRICS}")


def compute_distance(
    q_feats: Features, g_feats: Features, metric: str = "cosine", chunk_size: int = 4096
) -> np.ndarray:
    """Distance matrix between query and gallery features.

    ``cosine`` is ``1 - cosine similarity`` (in [0, 2]); ``euclidean`` is the true L2 distance (fast-reid returns
    its square; the ranking is the same). Inputs are never modified: normalisation works on copies.

    Args:
        q_feats: (num_query, dim) features, numpy or torch.
        g_feats: (num_gallery, dim) features.
        metric: ``"cosine"`` or ``"euclidean"``.
        chunk_size: query rows per matmul, bounding the temporaries to ``chunk_size x num_gallery``.

    Returns:
        (num_query, num_gallery) float32 numpy array.

    Raises:
        DataError: empty, non-finite or dimension-mismatched features.
        ValueError: unknown metric.
    """
    check_metric(metric)
    q = as_feature_tensor(q_feats, "q_feats")
    g = as_feature_tensor(g_feats, "g_feats")
    if q.shape[1] != g.shape[1]:
        raise DataError(f"feature dims differ: query {q.shape[1]}, gallery {g.shape[1]}")
    out = np.empty((q.shape[0], g.shape[0]), dtype=np.float32)
    if metric == "cosine":
        g = F.normalize(g, dim=1)
    else:
        g_sq = (g * g).sum(dim=1)
    with torch.no_grad():
        for start in range(0, q.shape[0], chunk_size):
            qc = q[start : start + chunk_size]
            if metric == "cosine":
                block = 1.0 - F.normalize(qc, dim=1) @ g.T
            else:
                # Expanded form avoids a (chunk, gallery, dim) broadcast; clamp guards tiny negative round-off.
                sq = (qc * qc).sum(dim=1, keepdim=True) + g_sq[None, :] - 2.0 * (qc @ g.T)
                block = sq.clamp_min_(0.0).sqrt_()
            out[start : start + chunk_size] = block.numpy()
    return out
