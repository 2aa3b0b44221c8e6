"""Market1501-protocol retrieval metrics (CMC, mAP, mINP) from a dense query x gallery distance matrix."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

import numpy as np

from compressreid.errors import DataError

# Rows of the distance matrix ranked per block; bounds the (rows x gallery) temporaries to a few hundred MB.
_BLOCK_ELEMENTS = 1 << 22


@dataclass(eq=False)
class RankResult:
    """Retrieval metrics of one evaluation; all values are fractions in [0, 1], not percentages.

    Attributes:
        cmc: mean CMC curve over valid queries, float32, length ``min(max_rank, num_gallery)``.
        all_AP: average precision of each valid query, in query order.
        all_INP: inverse negative penalty of each valid query, in query order.
        valid_query_mask: True for queries that kept at least one true match after junk removal.
        first_match: 0-based rank (after junk removal) of each valid query's first true match, in query order:
            0 is a Rank-1 hit. What paired comparisons of two models on the same queries need.
    """

    cmc: np.ndarray
    all_AP: np.ndarray
    all_INP: np.ndarray
    valid_query_mask: np.ndarray
    num_gallery: int
    first_match: Optional[np.ndarray] = None

    @property
    def mAP(self) -> float:
        return float(np.mean(self.all_AP))

    @property
    def mINP(self) -> float:
        return float(np.mean(self.all_INP))

    @property
    def num_valid(self) -> int:
        return int(self.valid_query_mask.sum())

    @property
    def skipped_query_indices(self) -> np.ndarray:
        """Queries left out because no true match remained in the gallery."""
        return np.flatnonzero(~self.valid_query_mask)

    def rank(self, k: int) -> float:
        """CMC at rank ``k`` (1-based); NaN when the curve was cut before ``k``."""
        if k <= len(self.cmc):
            return float(self.cmc[k - 1])
        # The whole gallery was ranked, so every valid query found its match by the last rank.
        return float(self.cmc[-1]) if len(self.cmc) == self.num_gallery else float("nan")

    @property
    def rank1(self) -> float:
        return self.rank(1)

    @property
    def rank5(self) -> float:
        return self.rank(5)

    @property
    def rank10(self) -> float:
        return self.rank(10)

    def as_dict(self) -> Dict[str, float]:
        """Scalar summary for reports and metrics.json."""
        return {
            "mAP": self.mAP,
            "mINP": self.mINP,
            "rank1": self.rank1,
            "rank5": self.rank5,
            "rank10": self.rank10,
            "num_valid_queries": self.num_valid,
            "num_skipped_queries": int(len(self.valid_query_mask) - self.num_valid),
        }


def check_labels(num_q: int, num_g: int, q_pids, g_pids, q_camids, g_camids) -> Tuple[np.ndarray, ...]:
    """Validate label arrays against the query/gallery sizes and encode pids and cameras as dense integers.

    Encoding lets string pids (merged datasets name them ``"name_pid"``) share the integer code path, e.g. the
    ``pid * num_cams + camid`` pair keys of the top-k evaluator.

    Returns:
        ``(q_pids, g_pids, q_camids, g_camids)`` as int64 codes; query and gallery share one code space.

    Raises:
        DataError: empty query or gallery, or a label array whose length does not match.
    """
    if num_q == 0 or num_g == 0:
        raise DataError(f"cannot evaluate with an empty split: {num_q} queries, {num_g} gallery images")
    arrays = [np.asarray(a) for a in (q_pids, g_pids, q_camids, g_camids)]
    names = ("q_pids", "g_pids", "q_camids", "g_camids")
    for name, arr, expected in zip(names, arrays, (num_q, num_g, num_q, num_g)):
        if arr.ndim != 1 or len(arr) != expected:
            raise DataError(f"{name} has shape {arr.shape}, expected ({expected},)")
    _, pid_codes = np.unique(np.concatenate([arrays[0], arrays[1]]), return_inverse=True)
    _, cam_codes = np.unique(np.concatenate([arrays[2], arrays[3]]), return_inverse=True)
    pid_codes = pid_codes.reshape(-1).astype(np.int64)
    cam_codes = cam_codes.reshape(-1).astype(np.int64)
    return pid_codes[:num_q], pid_codes[num_q:], cam_codes[:num_q], cam_codes[num_q:]


def score_ranked_lists(good: np.ndarray, keep: np.ndarray) -> Dict[str, np.ndarray]:
    """Per-row statistics of ranked lists, shared by the dense and the top-k evaluators.

    Args:
        good: (n, L) bool with L >= 1, True where the ranked entry is a true match (not junk).
        keep: (n, L) bool, False where the ranked entry is junk (same pid and same camera as the query).

    Returns:
        dict of (n,) arrays: ``found`` (true matches in the list), ``ap_sum`` (sum of precisions at those matches),
        ``first`` / ``last`` (0-based rank after junk removal of the first / last match; -1 when none).
    """
    kept_rank = np.cumsum(keep, axis=1, dtype=np.int64) - 1
    cum_good = np.cumsum(good, axis=1, dtype=np.int64)
    # Leading junk leaves kept_rank at -1 there; those entries are never good, the floor only avoids 0/0.
    precision = np.where(good, cum_good / np.maximum(kept_rank + 1.0, 1.0), 0.0)
    # A sequential sum (cumsum's last column) gives bit-identical results for a list and any prefix holding all its
    # matches, which is what lets the top-k evaluator reproduce the dense one exactly.
    ap_sum = np.cumsum(precision, axis=1)[:, -1]
    found = cum_good[:, -1]
    rows = np.arange(len(good))
    last_col = good.shape[1] - 1 - np.argmax(good[:, ::-1], axis=1)
    first = np.where(found > 0, kept_rank[rows, np.argmax(good, axis=1)], -1)
    last = np.where(found > 0, kept_rank[rows, last_col], -1)
    return {"found": found, "ap_sum": ap_sum, "first": first, "last": last}


def cmc_hits(first: np.ndarray, max_rank: int) -> np.ndarray:
    """(max_rank,) int64: how many of the given queries have their first match within each rank."""
    counts = np.bincount(first[(first >= 0) & (first < max_rank)], minlength=max_rank)
    return np.cumsum(counts)


def _rank_block(distmat, q_pids, g_pids, q_camids, g_camids) -> Dict[str, np.ndarray]:
    """Rank one block of query rows over the full gallery and score the ranked lists."""
    order = np.argsort(distmat, axis=1, kind="stable")
    match = g_pids[order] == q_pids[:, None]
    keep = ~(match & (g_camids[order] == q_camids[:, None]))
    return score_ranked_lists(match & keep, keep)


def evaluate_rank_detailed(distmat, q_pids, g_pids, q_camids, g_camids, max_rank: int = 50) -> RankResult:
    """Market1501-protocol evaluation with the fast-reid/torchreid ``eval_market1501`` conventions.

    For each query the gallery is sorted by ascending distance with a *stable* sort, so equal distances are
    ranked by gallery index. Gallery entries with the query's pid *and* camera are junk and removed; queries left
    without any true match are skipped (reported in ``valid_query_mask``). AP averages the precision at each true
    match, INP is ``num_matches / (rank of the last match)`` and CMC is 1 from the first match on. When fewer than
    ``max_rank`` gallery entries remain after junk removal the CMC row is padded with its last value (1).

    Args:
        distmat: (num_query, num_gallery) distances, smaller is more similar.
        q_pids, g_pids, q_camids, g_camids: 1-D identity and camera labels.
        max_rank: CMC length; reduced to ``num_gallery`` when the gallery is smaller.

    Returns:
        RankResult with per-query AP/INP, the mean CMC and convenience mAP/mINP/rank1/5/10.

    Raises:
        DataError: empty split, shape mismatch, NaN distances, or no query with a true match at all.
    """
    distmat = np.asarray(distmat)
    if distmat.ndim != 2:
        raise DataError(f"distmat must be 2-D (num_query, num_gallery), got shape {distmat.shape}")
    num_q, num_g = distmat.shape
    q_pids, g_pids, q_camids, g_camids = check_labels(num_q, num_g, q_pids, g_pids, q_camids, g_camids)
    if np.isnan(distmat).any():
        raise DataError("distmat contains NaN distances")
    if max_rank < 1:
        raise ValueError(f"max_rank must be >= 1, got {max_rank}")
    max_rank = min(max_rank, num_g)

    block = max(1, _BLOCK_ELEMENTS // num_g)
    parts = [
        _rank_block(distmat[s : s + block], q_pids[s : s + block], g_pids, q_camids[s : s + block], g_camids)
        for s in range(0, num_q, block)
    ]
    stats = {key: np.concatenate([p[key] for p in parts]) for key in parts[0]}
    valid = stats["found"] > 0
    if not valid.any():
        raise DataError(f"all {num_q} queries have no true match in the gallery")
    found = stats["found"][valid].astype(np.float64)
    all_AP = stats["ap_sum"][valid] / found
    all_INP = found / (stats["last"][valid] + 1.0)
    cmc = cmc_hits(stats["first"][valid], max_rank).astype(np.float32) / float(valid.sum())
    return RankResult(cmc=cmc, all_AP=all_AP, all_INP=all_INP, valid_query_mask=valid, num_gallery=num_g,
                      first_match=stats["first"][valid])


def evaluate_rank(
    distmat, q_pids, g_pids, q_camids, g_camids, max_rank: int = 50
) -> Tuple[np.ndarray, List[float], List[float]]:
    """Tuple form of :func:`evaluate_rank_detailed`, matching fast-reid's ``eval_market1501`` return.

    Returns:
        ``(cmc, all_AP, all_INP)``: float32 mean CMC of length ``min(max_rank, num_gallery)`` and per-valid-query
        AP and INP lists. Ties in ``distmat`` are ranked by gallery index (stable sort).

    Raises:
        DataError: see :func:`evaluate_rank_detailed`.
    """
    result = evaluate_rank_detailed(distmat, q_pids, g_pids, q_camids, g_camids, max_rank=max_rank)
    return result.cmc, result.all_AP.tolist(), result.all_INP.tolist()

