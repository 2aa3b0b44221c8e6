"""k-reciprocal re-ranking (Zhong et al., "Re-ranking Person Re-identification with k-reciprocal Encoding", CVPR 2017).

Implemented from the paper's equations with sparse set algebra; see :func:`k_reciprocal_rerank` for the choices the
paper leaves open.
"""

from __future__ import annotations

import numpy as np
from scipy import sparse

from compressreid.errors import DataError


def _full_distance(q_g_dist, q_q_dist, g_g_dist) -> np.ndarray:
    """The (q+g) x (q+g) distance matrix over probes and gallery, scaled to [0, 1]."""
    q_g, q_q, g_g = (np.asarray(d, dtype=np.float32) for d in (q_g_dist, q_q_dist, g_g_dist))
    nq, ng = q_g.shape if q_g.ndim == 2 else (0, 0)
    if q_g.ndim != 2 or nq == 0 or ng == 0:
        raise DataError(f"q_g_dist must be a non-empty 2-D matrix, got shape {q_g.shape}")
    if q_q.shape != (nq, nq) or g_g.shape != (ng, ng):
        raise DataError(f"q_q_dist {q_q.shape} / g_g_dist {g_g.shape} do not match q_g_dist {q_g.shape}")
    full = np.block([[q_q, q_g], [q_g.T, g_g]])
    if not np.isfinite(full).all():
        raise DataError("distance matrices contain NaN or inf")
    # Cosine distances can dip a hair below 0; the Gaussian kernel exp(-d) needs a scale-free, non-negative d.
    np.maximum(full, 0.0, out=full)
    np.fill_diagonal(full, 0.0)
    peak = full.max()
    return full / peak if peak > 0 else full


def _nearest(full: np.ndarray, width: int, block: int = 1024) -> np.ndarray:
    """(n, width) indices of each sample's nearest samples by (distance, index), the sample itself first."""
    n = len(full)
    out = np.empty((n, width), dtype=np.int64)
    for start in range(0, n, block):
        rows = full[start : start + block].copy()
        # Force self to the front even when duplicates sit at distance 0 too.
        rows[np.arange(len(rows)), np.arange(start, start + len(rows))] = -1.0
        if width < n:
            cand = np.argpartition(rows, width - 1, axis=1)[:, :width]
        else:
            cand = np.tile(np.arange(n), (len(rows), 1))
        order = np.lexsort((cand, np.take_along_axis(rows, cand, axis=1)), axis=-1)
        out[start : start + len(rows)] = np.take_along_axis(cand, order, axis=1)
    return out


def _neighbour_matrix(ranked: np.ndarray, k: int) -> sparse.csr_matrix:
    """Boolean N(p, k): row p marks its k+1 nearest samples (itself included, so every set is non-empty)."""
    n = len(ranked)
    cols = ranked[:, : k + 1]
    rows = np.repeat(np.arange(n), cols.shape[1])
    return sparse.csr_matrix((np.ones(cols.size, dtype=np.float32), (rows, cols.ravel())), shape=(n, n))


def _reciprocal(ranked: np.ndarray, k: int) -> sparse.csr_matrix:
    """R(p, k) = {g in N(p, k) : p in N(g, k)}, eq. (4), as an elementwise product with the transpose."""
    nbrs = _neighbour_matrix(ranked, k)
    return nbrs.multiply(nbrs.T).tocsr()


def _expanded_reciprocal(ranked: np.ndarray, k1: int) -> sparse.csr_matrix:
    """R*(p, k1), eq. (6)-(7): add R(q, k1/2) of each q in R(p, k1) that overlaps R(p, k1) by at least 2/3."""
    r_full = _reciprocal(ranked, k1)
    r_half = _reciprocal(ranked, int(np.round(k1 / 2)))
    half_size = np.asarray(r_half.sum(axis=1)).ravel()
    # overlap[p, q] = |R(p, k1) ∩ R(q, k1/2)|, only needed where q is a candidate in R(p, k1).
    overlap = (r_full @ r_half.T).multiply(r_full).tocoo()
    accept = overlap.data >= (2.0 / 3.0) * half_size[overlap.col]
    n = r_full.shape[0]
    chosen = sparse.csr_matrix(
        (np.ones(int(accept.sum()), dtype=np.float32), (overlap.row[accept], overlap.col[accept])), shape=(n, n)
    )
    return ((r_full + chosen @ r_half) > 0).astype(np.float32).tocsr()


def _encode(full: np.ndarray, ranked: np.ndarray, k1: int, k2: int) -> sparse.csr_matrix:
    """V_p: Gaussian weights exp(-d) on R*(p, k1), eq. (8), L1-normalised, then averaged over N(p, k2), eq. (11)."""
    members = _expanded_reciprocal(ranked, k1).tocoo()
    weights = np.exp(-full[members.row, members.col])
    v = sparse.csr_matrix((weights, (members.row, members.col)), shape=full.shape)
    # Unit mass per row makes sum(max) = 2 - sum(min) in the Jaccard distance, so only minima are needed.
    v = sparse.diags(1.0 / np.asarray(v.sum(axis=1)).ravel()) @ v
    if k2 > 1:
        v = (_neighbour_matrix(ranked, k2 - 1) @ v) / float(k2)
    return v.tocsr()


def _jaccard(v: sparse.csr_matrix, nq: int) -> np.ndarray:
    """d_J(p, g) = 1 - sum_j min(V_pj, V_gj) / sum_j max(V_pj, V_gj), eq. (10), via an inverted index."""
    probes = v[:nq]
    gallery = v[nq:].tocsc()  # column j lists the gallery samples whose encoding touches sample j
    min_sum = np.zeros((nq, gallery.shape[0]), dtype=np.float64)
    for p in range(nq):
        cols = probes.indices[probes.indptr[p] : probes.indptr[p + 1]]
        vals = probes.data[probes.indptr[p] : probes.indptr[p + 1]]
        sub = gallery[:, cols]
        per_entry_col = np.repeat(np.arange(len(cols)), np.diff(sub.indptr))
        mins = np.minimum(sub.data, vals[per_entry_col])
        min_sum[p] = np.bincount(sub.indices, weights=mins, minlength=gallery.shape[0])
    return 1.0 - min_sum / (2.0 - min_sum)


def k_reciprocal_rerank(
    q_g_dist, q_q_dist, g_g_dist, k1: int = 20, k2: int = 6, lambda_value: float = 0.3
) -> np.ndarray:
    """Re-rank by mixing the original distance with the Jaccard distance of k-reciprocal encodings, eq. (12).

    Choices the paper leaves open: probes and gallery together form the neighbour pool; N(p, k) counts p itself
    plus k neighbours; distances are divided by their global maximum before the kernel exp(-d) so the result
    does not depend on the metric's scale, and that scaled distance is the one mixed in; each encoding is
    normalised to unit mass; ties inside a neighbourhood are ordered by index (which of several samples tied at the
    k-th place gets in is arbitrary). Memory is about two (q+g)^2 float32 matrices, as in the paper's dense setting.

    Args:
        q_g_dist: (num_query, num_gallery) original distances.
        q_q_dist: (num_query, num_query) distances among queries.
        g_g_dist: (num_gallery, num_gallery) distances among gallery samples.
        k1: neighbourhood size of the k-reciprocal sets.
        k2: neighbourhood size of the local query expansion (1 disables it).
        lambda_value: weight of the original distance in the final distance.

    Returns:
        (num_query, num_gallery) float32 re-ranked distances: ``(1 - lambda) * d_J + lambda * d / max(d)``.

    Raises:
        DataError: inconsistent shapes or non-finite distances.
        ValueError: ``k1 < 1``, ``k2 < 1`` or ``lambda_value`` outside [0, 1].
    """
    if k1 < 1 or k2 < 1 or not 0.0 <= lambda_value <= 1.0:
        raise ValueError(f"need k1 >= 1, k2 >= 1 and 0 <= lambda_value <= 1, got {k1}, {k2}, {lambda_value}")
    full = _full_distance(q_g_dist, q_q_dist, g_g_dist)
    nq = np.asarray(q_g_dist).shape[0]
    n = len(full)
    ranked = _nearest(full, min(max(k1 + 1, k2), n))
    v = _encode(full, ranked, min(k1, n - 1), min(k2, n))
    jaccard = _jaccard(v, nq)
    return ((1.0 - lambda_value) * jaccard + lambda_value * full[:nq, nq:]).astype(np.float32)
