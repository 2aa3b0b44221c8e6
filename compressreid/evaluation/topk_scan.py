"""Per-query top-n of scores produced block by block (query rows x gallery columns), kept in faiss heaps.

The loop shared by the FP32 and the int8 gallery searches: a searcher yields score blocks (larger = better) and
never holds more than one block; the heaps hold ``num_query x n`` values and gallery indices.
"""

from __future__ import annotations

from typing import Iterable, Tuple

import faiss
import numpy as np

# faiss min-heaps keep the n *largest* values; one per score dtype the searchers produce.
_HEAPS = {np.dtype(np.float32): faiss.float_minheap_array_t, np.dtype(np.int32): faiss.int_minheap_array_t}

ScoreBlock = Tuple[int, int, np.ndarray]


def topn_from_blocks(num_query: int, n: int, dtype, blocks: Iterable[ScoreBlock]) -> Tuple[np.ndarray, np.ndarray]:
    """The ``n`` largest scores of every query over all blocks, best first, with their gallery indices.

    Args:
        num_query: rows of the result.
        n: scores kept per query; must not exceed the number of gallery columns the blocks cover.
        dtype: ``np.float32`` or ``np.int32``, the dtype of every block.
        blocks: ``(first_query, first_gallery, scores)`` with ``scores`` a C-contiguous
            ``(rows, cols)`` array for queries ``first_query ...`` and gallery ``first_gallery ...``.
            Blocks of one query row should come in increasing gallery order: a heap replaces its worst entry
            only on a strictly larger score, so among equal scores at the cut the lowest gallery index stays.

    Returns:
        ``(scores, indices)``: ``(num_query, n)`` arrays, each row sorted from the best score down.
    """
    dtype = np.dtype(dtype)
    vals = np.empty((num_query, n), dtype=dtype)
    ids = np.empty((num_query, n), dtype=np.int64)
    heaps = _HEAPS[dtype]()
    heaps.k, heaps.nh = n, num_query
    heaps.val, heaps.ids = faiss.swig_ptr(vals), faiss.swig_ptr(ids)
    heaps.heapify()
    for first_query, first_gallery, scores in blocks:
        if scores.dtype != dtype or not scores.flags.c_contiguous:
            raise TypeError(f"score blocks must be C-contiguous {dtype}, got {scores.dtype}")
        # faiss threads over the heap rows; the block stays owned by the caller (often a reused buffer).
        heaps.addn(scores.shape[1], faiss.swig_ptr(scores), first_gallery, first_query, scores.shape[0])
    heaps.reorder()
    return vals, ids
