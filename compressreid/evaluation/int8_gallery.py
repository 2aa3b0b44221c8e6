"""An int8 gallery: codes in memory (a quarter of FP32), FP32 rows in a file, candidates by int8 matrix products.

Each gallery dimension d gets one scale s_d (its largest magnitude / 127) and code c = round(g / s). A query q is
folded onto those scales, q' = q * s, and coded per query as q' ~ t u with u in [-63, 63]. Then
``q.g = t (u.c) + delta.c + q.eps`` (delta, eps: the query and gallery rounding residuals), so the int32 product
``u.c`` ranks a query's gallery entries up to an error the Cauchy-Schwarz bound ``|delta| max|c| + |q| max|eps|``
caps, which is what lets the exact re-scoring prove a window large enough. That worst case aligns all 512 rounding
errors; treated as independent noise over the gallery they have a standard deviation ~20x smaller, the estimate
that judges whether a window is *likely* large enough (see gallery_search).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Optional

import faiss
import numpy as np
import onnxruntime as ort
from onnx import TensorProto, helper

from compressreid.errors import DataError
from compressreid.evaluation.distance import Features, check_metric
from compressreid.evaluation.rescore import rounding_slack
from compressreid.evaluation.row_file import Float32RowFile
from compressreid.evaluation.search import as_float32_rows, prepare_rows
from compressreid.evaluation.topk_scan import ScoreBlock, topn_from_blocks

GALLERY_LEVELS = 127
# Queries use 7 bits: x86 without VNNI multiplies u8 x s8 pairs into a saturating int16 (VPMADDUBSW), and
# 2 x 127 x 127 = 32258 fits where 2 x 255 x 127 does not. The u8 code is u + 64, removed as the zero point.
QUERY_LEVELS = 63
QUERY_ZERO_POINT = 64


def _matmul_integer_session(dim: int) -> ort.InferenceSession:
    """ONNX Runtime's MatMulInteger: (n, dim) u8 query codes x (dim, m) s8 gallery codes -> int32 sums."""
    inputs = [helper.make_tensor_value_info("A", TensorProto.UINT8, [None, dim]),
              helper.make_tensor_value_info("B", TensorProto.INT8, [dim, None])]
    output = helper.make_tensor_value_info("Y", TensorProto.INT32, [None, None])
    zero_point = helper.make_tensor("a_zero_point", TensorProto.UINT8, [], [QUERY_ZERO_POINT])
    node = helper.make_node("MatMulInteger", ["A", "B", "a_zero_point"], ["Y"])
    graph = helper.make_graph([node], "int8_gallery_scores", inputs, [output], [zero_point])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    options = ort.SessionOptions()
    # The products use as many threads as the faiss heaps and BLAS (OMP_NUM_THREADS), not ORT's own default; idle
    # runtime threads would otherwise spin on the cores the heaps need between two products.
    options.intra_op_num_threads = faiss.omp_get_max_threads()
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


@dataclass
class CandidateWindow:
    """The int8 pass's result for a batch of queries.

    Attributes:
        ids: (num_query, window) gallery indices, best approximate score first.
        worst_score: (num_query,) the window's lowest approximate score: no entry outside it scores higher.
        error_bound: (num_query,) most any approximate score can differ from the FP32 score the re-scoring
            computes (quantisation bound plus float32 rounding), in score units.
        noise_sigma: (num_query,) the standard deviation of that difference over the gallery, with the rounding
            errors taken as independent noise.
        scores, scale: the approximate scores of ``ids`` (int32 sums or float32 estimates) and what turns a row
            of them into score units; kept only on request, for :meth:`prefix`.
    """

    ids: np.ndarray
    worst_score: np.ndarray
    error_bound: np.ndarray
    noise_sigma: np.ndarray
    scores: Optional[np.ndarray] = None
    scale: Optional[np.ndarray] = None

    def prefix(self, window: int) -> "CandidateWindow":
        """The first ``window`` candidates (copies), as if the pass had kept only those (needs ``scores``)."""
        if self.scores is None:
            raise ValueError("prefix needs the scores: call candidates(..., keep_scores=True)")
        worst = self.scores[:, window - 1].astype(np.float64) * self.scale
        return CandidateWindow(self.ids[:, :window].copy(), worst, self.error_bound, self.noise_sigma)


class Int8Gallery:
    """Built by streaming: :meth:`add` chunks, :meth:`finalize` once, then :meth:`candidates` per query batch.

    Scores are cosine similarities (rows L2-normalised on entry) or, for euclidean, ``2 q.g - |g|^2``.

    Args:
        dim: embedding width.
        metric: ``"cosine"`` or ``"euclidean"``.
        directory: where the float32 row file goes (default: the system temporary directory).
        block_rows: gallery rows per int8 product and per read of the row file.
    """

    def __init__(self, dim: int, metric: str = "cosine", directory: Optional[str] = None, block_rows: int = 8192):
        check_metric(metric)
        self.dim, self.metric, self.block_rows = dim, metric, block_rows
        self.rows = Float32RowFile(dim, directory)
        self._absmax = np.zeros(dim, dtype=np.float32)
        self._code_blocks: list = []
        self._finalized = False

    @classmethod
    def from_features(cls, g_feats: Features, metric: str = "cosine", directory: Optional[str] = None,
                      block_rows: int = 8192, chunk: int = 16384) -> "Int8Gallery":
        """A finalized gallery from features already in memory (added in chunks of ``chunk`` rows)."""
        g = as_float32_rows(g_feats, "g_feats")
        gallery = cls(g.shape[1], metric, directory, block_rows)
        try:
            for start in range(0, len(g), chunk):
                gallery.add(g[start : start + chunk])
            gallery.finalize()
        except BaseException:
            gallery.close()
            raise
        return gallery

    @property
    def num_rows(self) -> int:
        return self.rows.num_rows

    def add(self, feats: Features) -> None:
        """Append gallery rows (numpy or torch); they are checked, normalised for cosine and written to the file."""
        if self._finalized:
            raise DataError("Int8Gallery.add after finalize: the scales are fixed")
        block = as_float32_rows(feats, "g_feats")
        if block.shape[1] != self.dim:
            raise DataError(f"feature dims differ: gallery {self.dim}, added rows {block.shape[1]}")
        block = prepare_rows(block, self.metric, "g_feats")
        self.rows.append(block)
        np.maximum(self._absmax, np.abs(block).max(axis=0), out=self._absmax)

    def finalize(self) -> None:
        """Fix the per-dimension scales and code the file's rows (one sequential pass over the file)."""
        if self.num_rows == 0:
            raise DataError("g_feats is empty: add rows before finalize")
        self.scales = np.where(self._absmax > 0, self._absmax / GALLERY_LEVELS, 1.0).astype(np.float64)
        self.max_code_norm = self.max_residual_norm = self.max_row_norm = 0.0
        self._code_sq, self._residual_sq = np.zeros(self.dim), np.zeros(self.dim)  # per dimension, summed
        sq_norms = []
        for _, rows in self.rows.blocks(self.block_rows):
            codes = np.empty(rows.shape, dtype=np.int8)
            for s in range(0, len(rows), 1024):  # 1024 rows at a time keep the float64 temporaries small
                codes[s : s + 1024] = self._code_rows(rows[s : s + 1024])
            sq = np.einsum("ij,ij->i", rows, rows)
            self.max_row_norm = max(self.max_row_norm, float(np.sqrt(sq.max())))
            if self.metric == "euclidean":
                sq_norms.append(sq)
            self._code_blocks.append(np.ascontiguousarray(codes.T))  # MatMulInteger's B is (dim, m)
        self.sq_norms = np.concatenate(sq_norms) if sq_norms else None
        self.mean_code_sq, self.mean_residual_sq = self._code_sq / self.num_rows, self._residual_sq / self.num_rows
        self._finalized = True

    def _code_rows(self, rows: np.ndarray) -> np.ndarray:
        """int8 codes of some rows, recording the largest code and residual norms the error bound needs."""
        codes = np.clip(np.rint(rows / self.scales), -GALLERY_LEVELS, GALLERY_LEVELS)
        residual = rows - codes * self.scales
        self.max_code_norm = max(self.max_code_norm, float(np.sqrt(np.einsum("ij,ij->i", codes, codes).max())))
        residual_norm = float(np.sqrt(np.einsum("ij,ij->i", residual, residual).max()))
        self.max_residual_norm = max(self.max_residual_norm, residual_norm)
        self._code_sq += np.einsum("ij,ij->j", codes, codes)
        self._residual_sq += np.einsum("ij,ij->j", residual, residual)
        return codes.astype(np.int8)

    def candidates(self, qn: np.ndarray, window: int, query_chunk: int = 1024,
                   keep_scores: bool = False) -> CandidateWindow:
        """The ``window`` best gallery entries of each query by int8 score, and the bound that judges them.

        Args:
            qn: (num_query, dim) float32 queries, already prepared as the rows were (L2-normalised for cosine).
            window: entries kept per query, at most ``num_rows``.
            query_chunk: query rows per int8 product.
            keep_scores: keep every candidate's approximate score (for :meth:`CandidateWindow.prefix`).
        """
        if not self._finalized:
            raise DataError("Int8Gallery.candidates before finalize")
        codes, step, q_norm, delta_norm, sigma = self._quantize_queries(qn)
        dtype = np.int32 if self.metric == "cosine" else np.float32
        blocks = self._score_blocks(codes, step, query_chunk)
        scores, ids = topn_from_blocks(len(qn), window, dtype, blocks)
        bound = delta_norm * self.max_code_norm + q_norm * self.max_residual_norm
        if self.metric == "cosine":
            scale = step  # the int32 sum ranked the row; its score is step * sum
        else:
            scale, bound, sigma = np.ones(len(qn)), 2.0 * bound, 2.0 * sigma  # the score is 2 q.g - |g|^2
        # The re-scored FP32 scores round too; at d = 512 that is ~2% of the quantisation bound.
        bound += rounding_slack(self.dim, q_norm, self.max_row_norm)
        worst = scores[:, -1].astype(np.float64) * scale
        if not keep_scores:
            return CandidateWindow(ids, worst, bound, sigma)
        return CandidateWindow(ids, worst, bound, sigma, scores, scale)

    def _quantize_queries(self, qn: np.ndarray, chunk: int = 1024):
        """u8 codes (u + 64), code steps t, and per query |q|, the norm of the rounding residual
        delta = q * s - t u and the standard deviation of ``delta.c + q.eps`` over the gallery (independent rounding
        errors)."""
        codes = np.empty(qn.shape, dtype=np.uint8)
        step, q_norm, delta_norm, sigma = (np.empty(len(qn)) for _ in range(4))
        for s in range(0, len(qn), chunk):  # chunked: the float64 temporaries would rival the codes
            q64 = qn[s : s + chunk].astype(np.float64)
            folded = q64 * self.scales
            t = np.abs(folded).max(axis=1) / QUERY_LEVELS
            t[t == 0] = 1.0  # a zero query: every score is 0 and the bound is |q| max|eps|
            units = np.rint(folded / t[:, None])
            delta_sq = (folded - units * t[:, None]) ** 2
            step[s : s + chunk], delta_norm[s : s + chunk] = t, np.sqrt(delta_sq.sum(axis=1))
            sigma[s : s + chunk] = np.sqrt(delta_sq @ self.mean_code_sq + q64**2 @ self.mean_residual_sq)
            q_norm[s : s + chunk] = np.linalg.norm(q64, axis=1)
            codes[s : s + chunk] = units + QUERY_ZERO_POINT
        return codes, step, q_norm, delta_norm, sigma

    def _score_blocks(self, codes: np.ndarray, step: np.ndarray, query_chunk: int) -> Iterator[ScoreBlock]:
        """Int32 sums (cosine) or float32 ``2 q.g - |g|^2`` estimates (euclidean), gallery block by block."""
        session = _matmul_integer_session(self.dim)
        binding = session.io_binding()
        size = min(query_chunk, len(codes)) * min(self.block_rows, self.num_rows)
        out_int = np.empty(size, dtype=np.int32)
        out_float = np.empty(size if self.metric == "euclidean" else 0, dtype=np.float32)
        for b, block in enumerate(self._code_blocks):
            start = b * self.block_rows
            for qs in range(0, len(codes), query_chunk):
                rows = codes[qs : qs + query_chunk]
                out = out_int[: len(rows) * block.shape[1]].reshape(len(rows), block.shape[1])
                binding.bind_cpu_input("A", rows)
                binding.bind_cpu_input("B", block)
                binding.bind_output("Y", "cpu", 0, np.int32, out.shape, out.ctypes.data)  # into our buffer
                session.run_with_iobinding(binding)
                if self.metric == "cosine":
                    yield qs, start, out
                    continue
                est = out_float[: out.size].reshape(out.shape)
                np.multiply(out, 2.0 * step[qs : qs + len(rows), None], out=est, casting="same_kind")
                est -= self.sq_norms[start : start + block.shape[1]]
                yield qs, start, est

    def close(self) -> None:
        """Delete the row file and drop the codes."""
        self.rows.close()
        self._code_blocks = []

    def __enter__(self) -> "Int8Gallery":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
