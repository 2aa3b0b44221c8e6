"""How a top-k evaluation stores and searches its gallery (``TEST.GALLERY_STORAGE``), behind one contract.

``fp32``: the exact search (:func:`topk_search`) over the float32 gallery in memory. ``int8``: int8 codes in
memory (:class:`Int8Gallery`), a candidate window per query by int8 products, then the window re-scored exactly
in FP32 from the row file. Both return :func:`topk_search`'s (distances, indices), rows in (distance, gallery
index) order; the int8 result equals the exact one whenever the window holds the true top k.
"""

from __future__ import annotations

from dataclasses import dataclass
from statistics import NormalDist
from typing import Optional, Tuple

import numpy as np

from compressreid.errors import ConfigError, DataError
from compressreid.evaluation.distance import Features
from compressreid.evaluation.int8_gallery import CandidateWindow, Int8Gallery
from compressreid.evaluation.rescore import kth_scores, rescore_topk
from compressreid.evaluation.search import as_float32_rows, prepare_rows, topk_search
from compressreid.registry import Registry

GALLERY_STORAGES = Registry("gallery storage")
# Candidates held at once by the int8 search (a score and an id each): bounds its memory beside the codes, while
# fewer query batches mean fewer int8 passes and row-file reads.
CANDIDATE_BYTES = 64 << 20
# Largest chance, per query and under the rounding-noise model, that an entry outside the window belongs in the
# top k before the window is reported as likely too small.
RISK = 1e-3
# The default window, in multiples of k. On the planted 1M-gallery benchmark (README, AVX2 machine) the true top 100
# lies within the int8 top 200 for every query and the noise estimate stops flagging queries at 300; the worst-case
# bound proves all but 2 of 10,000 queries only at 20 x k: set TEST.RESCORE_WINDOW there when a proof is wanted.
DEFAULT_WINDOW_FACTOR = 3


@dataclass
class GallerySearchResult:
    """Top-k lists of a gallery search and which queries' lists are proven equal to the exact search's.

    Attributes:
        topk_dist, topk_idx: (num_query, k) float32 distances and int64 gallery indices.
        storage: the storage kind searched.
        window: candidates re-scored per query (k for the exact search).
        unproven_query_mask: True where the worst-case error bound leaves gallery entries outside the window that
            could still reach the query's top k (nothing is proven wrong; large windows prove every query).
        at_risk_query_mask: True where, with the rounding errors taken as independent noise, an entry outside
            the window has more than a ``RISK`` chance of belonging in the top k: the window is likely too small.
    """

    topk_dist: np.ndarray
    topk_idx: np.ndarray
    storage: str
    window: int
    unproven_query_mask: np.ndarray
    at_risk_query_mask: np.ndarray

    @property
    def num_unproven(self) -> int:
        return int(self.unproven_query_mask.sum())

    @property
    def num_at_risk(self) -> int:
        return int(self.at_risk_query_mask.sum())

    @property
    def message(self) -> str:
        """A one-line warning when the window is likely too small for some queries, else an empty string."""
        if not self.num_at_risk:
            return ""
        k, num_q = self.topk_idx.shape[1], len(self.at_risk_query_mask)
        return (f"TEST.RESCORE_WINDOW={self.window} is likely too small for {self.num_at_risk} of {num_q} queries: "
                f"a gallery entry outside their window may belong in their top {k} ({self.storage} rounding taken as "
                f"noise; {self.num_unproven} of {num_q} are not proven by the worst-case bound)")


def rescore_window(qn: np.ndarray, gallery: Int8Gallery, cand: CandidateWindow,
                   k: int) -> Tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Exact FP32 top-k of each query's candidate window, and how sure it is that the window held the true top k.

    Args:
        qn: (num_query, dim) queries prepared as the gallery's rows (L2-normalised for cosine).
        gallery: the gallery ``cand`` came from.
        cand: :meth:`Int8Gallery.candidates` output; its ``ids`` are sorted in place.
        k: neighbours per query, at most the window.

    Returns:
        ``(topk_dist, topk_idx, proven, likely)``: ``proven`` by the worst-case bound; ``likely`` where an entry
        outside the window has at most a ``RISK`` chance of belonging in the top k (union over the gallery of
        Gaussian tails), or is proven.
    """
    cand.ids.sort(axis=1)  # gallery order per row, which rescore_topk's tie rule needs
    blocks = gallery.rows.blocks(gallery.block_rows)
    topk_d, topk_i = rescore_topk(qn, blocks, gallery.num_rows, cand.ids, gallery.metric, gallery.block_rows, k)
    if cand.ids.shape[1] == gallery.num_rows:
        everything = np.ones(len(qn), dtype=bool)
        return topk_d, topk_i, everything, everything
    s_k = kth_scores(topk_d, qn, gallery.metric)
    proven = cand.worst_score + cand.error_bound < s_k
    return topk_d, topk_i, proven, likely_complete(cand.worst_score, cand.noise_sigma, cand.error_bound, s_k,
                                                   gallery.num_rows)


def likely_complete(worst: np.ndarray, sigma: np.ndarray, bound: np.ndarray, s_k: np.ndarray,
                    num_rows: int) -> np.ndarray:
    """True where no outside entry (approximate score <= ``worst``) has more than a ``RISK`` chance of reaching
    ``s_k``: a union over ``num_rows`` entries of Gaussian tails of the rounding noise, capped by the proof."""
    z = -NormalDist().inv_cdf(RISK / num_rows)  # 6.0 for a million rows
    return worst + np.minimum(z * sigma, bound) < s_k


def int8_topk_search(q_feats: Features, gallery: Int8Gallery, k: int, window: int,
                     query_batch: Optional[int] = None, query_chunk: int = 1024) -> GallerySearchResult:
    """Top-k over an :class:`Int8Gallery`: int8 candidates, then exact FP32 re-scoring of the window.

    Queries go in batches: each batch is one int8 pass over the codes and one read of the row file, and only
    its ``query_batch x window`` candidates are held (by default as many queries as keep them under
    ``CANDIDATE_BYTES``).

    Args:
        q_feats: (num_query, dim) features, numpy or torch.
        gallery: a finalized :class:`Int8Gallery`.
        k: neighbours per query; reduced to the gallery size when the gallery is smaller.
        window: candidates per query re-scored exactly (``>= k``); reduced to the gallery size.
        query_batch: queries per candidate pass and row-file read (None: from ``CANDIDATE_BYTES``).
        query_chunk: query rows per int8 product.

    Raises:
        DataError: empty, non-finite or dimension-mismatched queries.
        ValueError: ``k < 1`` or ``window < k``.
    """
    if k < 1 or window < k:
        raise ValueError(f"need 1 <= k <= window, got k={k}, window={window}")
    qn = prepare_queries(q_feats, gallery)
    k, window = min(k, gallery.num_rows), min(window, gallery.num_rows)
    query_batch = query_batch or max(256, CANDIDATE_BYTES // (12 * window))  # int32/float32 score + int64 id
    parts = []
    for s in range(0, len(qn), query_batch):
        batch = qn[s : s + query_batch]
        parts.append(rescore_window(batch, gallery, gallery.candidates(batch, window, query_chunk), k))
    topk_d, topk_i, proven, likely = (np.concatenate(arrays) for arrays in zip(*parts))
    return GallerySearchResult(topk_d, topk_i, "int8", window, ~proven, ~likely)


def prepare_queries(q_feats: Features, gallery: Int8Gallery) -> np.ndarray:
    """Queries as float32 rows prepared like the gallery's (checked; L2-normalised for cosine)."""
    q = as_float32_rows(q_feats, "q_feats")
    if q.shape[1] != gallery.dim:
        raise DataError(f"feature dims differ: query {q.shape[1]}, gallery {gallery.dim}")
    return prepare_rows(q, gallery.metric, "q_feats")


@GALLERY_STORAGES.register("fp32")
def _search_fp32(q_feats: Features, g_feats: Features, k: int, metric: str, window: int) -> GallerySearchResult:
    topk_d, topk_i = topk_search(q_feats, g_feats, k, metric)
    exact = np.zeros(len(topk_i), dtype=bool)
    return GallerySearchResult(topk_d, topk_i, "fp32", topk_i.shape[1], exact, exact)


@GALLERY_STORAGES.register("int8")
def _search_int8(q_feats: Features, g_feats: Features, k: int, metric: str, window: int) -> GallerySearchResult:
    with Int8Gallery.from_features(g_feats, metric) as gallery:
        return int8_topk_search(q_feats, gallery, k, window)


def resolve_window(topk: int, window: int) -> int:
    """``TEST.RESCORE_WINDOW``, with 0 meaning ``DEFAULT_WINDOW_FACTOR x TEST.TOPK``."""
    return window if window > 0 else DEFAULT_WINDOW_FACTOR * topk


def check_gallery_options(storage: str, window: int, topk: int) -> None:
    """Raise a one-line :class:`ConfigError` naming the key when the storage options cannot work together."""
    if storage not in GALLERY_STORAGES:
        raise ConfigError(f"TEST.GALLERY_STORAGE: unknown storage {storage!r}; valid: "
                          f"{', '.join(GALLERY_STORAGES.names())}")
    if storage != "fp32" and topk <= 0:
        raise ConfigError(f"TEST.GALLERY_STORAGE {storage!r} needs TEST.TOPK > 0 (it is a top-k search)")
    if window < 0 or (window > 0 and window < topk):
        raise ConfigError(f"TEST.RESCORE_WINDOW={window} must be 0 (= {DEFAULT_WINDOW_FACTOR} x TEST.TOPK) "
                          f"or >= TEST.TOPK={topk}")


def search_gallery(q_feats: Features, g_feats: Features, k: int, metric: str = "cosine", storage: str = "fp32",
                   window: Optional[int] = 0) -> GallerySearchResult:
    """Top-k search with the gallery stored as ``storage`` (see module docstring).

    Raises:
        ConfigError: unknown storage or a window below k (see :func:`check_gallery_options`).
        DataError: empty, non-finite or dimension-mismatched features.
    """
    check_gallery_options(storage, window or 0, k)
    return GALLERY_STORAGES.get(storage)(q_feats, g_feats, k, metric, resolve_window(k, window or 0))
