"""Alpha-weighted average query expansion (alpha-QE, Radenovic et al.), with fast-reid's ``aqe`` conventions."""

from __future__ import annotations

from typing import Tuple

import numpy as np
import torch
import torch.nn.functional as F

from compressreid.errors import DataError
from compressreid.evaluation.distance import Features, as_feature_tensor


def _expand_once(feats: torch.Tensor, qe_k: int, alpha: float, chunk: int) -> torch.Tensor:
    """Replace every feature by the sim^alpha-weighted mean of its qe_k most similar features (itself included)."""
    normed = F.normalize(feats, dim=1)
    out = torch.empty_like(feats)
    for start in range(0, len(feats), chunk):
        sims = normed[start : start + chunk] @ normed.T
        top_sim, top_idx = sims.topk(qe_k, dim=1)
        # fast-reid divides by qe_k rather than by the weight sum, and keeps the sign of negative similarities
        # (alpha is odd by default); we keep both so scores stay comparable with fast-reid runs.
        weights = top_sim.pow(alpha).unsqueeze(-1)
        out[start : start + chunk] = (feats[top_idx] * weights).mean(dim=1)
    return out


def aqe(
    q_feats: Features,
    g_feats: Features,
    qe_times: int = 1,
    qe_k: int = 5,
    alpha: float = 3.0,
    chunk_size: int = 2048,
) -> Tuple[Features, Features]:
    """Alpha-weighted query expansion applied to queries and gallery together.

    Every feature (query and gallery pooled) becomes ``mean_i(sim_i^alpha * f_i)`` over its ``qe_k`` nearest
    neighbours by cosine similarity, the feature itself included; this repeats ``qe_times`` times. The inputs are
    not modified.

    Args:
        q_feats: (num_query, dim) features, numpy or torch.
        g_feats: (num_gallery, dim) features.
        qe_times: number of expansion rounds.
        qe_k: neighbours averaged per feature (clamped to the pool size).
        alpha: exponent of the similarity weights.
        chunk_size: rows per similarity block, bounding memory to ``chunk_size x (num_query + num_gallery)``.

    Returns:
        ``(new_q_feats, new_g_feats)``, numpy arrays if ``q_feats`` is numpy, else float32 CPU tensors.

    Raises:
        DataError: empty, non-finite or dimension-mismatched features.
        ValueError: ``qe_times < 0`` or ``qe_k < 1``.
    """
    if qe_times < 0 or qe_k < 1:
        raise ValueError(f"need qe_times >= 0 and qe_k >= 1, got {qe_times}, {qe_k}")
    q = as_feature_tensor(q_feats, "q_feats")
    g = as_feature_tensor(g_feats, "g_feats")
    if q.shape[1] != g.shape[1]:
        raise DataError(f"feature dims differ: query {q.shape[1]}, gallery {g.shape[1]}")
    feats = torch.cat([q, g], dim=0)  # a new tensor: the caller's features stay untouched
    with torch.no_grad():
        for _ in range(qe_times):
            feats = _expand_once(feats, min(qe_k, len(feats)), alpha, chunk_size)
    new_q, new_g = feats[: len(q)], feats[len(q) :]
    if isinstance(q_feats, np.ndarray):
        return new_q.numpy().copy(), new_g.numpy().copy()
    return new_q.clone(), new_g.clone()
