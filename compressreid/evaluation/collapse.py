"""Whether a model's embeddings still tell images apart: the built-in check against "the same output for every
input", a known failure after export and INT8 (torchreid #316, fast-reid #421), which a gate relative to an earlier
stage cannot see when that stage collapsed too.

Two numbers, both cheap on any gallery size:
- ``collapse_mean_cosine``: mean cosine between two different gallery embeddings (1.0 when every image maps to the
  same direction; computed exactly from the norm of the sum of the unit vectors);
- ``distinct_nn_share``: distinct nearest gallery entries over the queries, per query (1/num_query when every query
  finds the same image).
"""

from __future__ import annotations

from typing import Dict, Optional

import numpy as np
import torch

COLLAPSE_METRICS = ("collapse_mean_cosine", "distinct_nn_share")


def mean_pairwise_cosine(feats: torch.Tensor) -> float:
    """Mean cosine over every pair of different rows: (|sum of unit rows|^2 - n) / (n (n - 1)); NaN for NaN rows."""
    x = feats.detach().double()
    n = x.shape[0]
    if n < 2:
        return float("nan")
    unit = x / x.norm(dim=1, keepdim=True).clamp_min(1e-12)
    total = unit.sum(dim=0)
    return float((total @ total - n) / (n * (n - 1)))


def distinct_nn_share(nearest: np.ndarray) -> float:
    """Distinct nearest gallery indices over the number of queries (NaN when there is none)."""
    nearest = np.asarray(nearest).reshape(-1)
    return float(len(np.unique(nearest)) / len(nearest)) if len(nearest) else float("nan")


def collapse_metrics(g_feats: torch.Tensor, nearest: np.ndarray,
                     any_nan: Optional[bool] = None) -> Dict[str, float]:
    """Both numbers; NaN embeddings make both NaN (a NaN model never passes)."""
    if any_nan is None:
        any_nan = bool(torch.isnan(g_feats).any())
    if any_nan:
        return {name: float("nan") for name in COLLAPSE_METRICS}
    return {"collapse_mean_cosine": mean_pairwise_cosine(g_feats), "distinct_nn_share": distinct_nn_share(nearest)}
