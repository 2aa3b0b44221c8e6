"""Evaluation figures saved as PNG: ROC overlays, distance histograms and a gallery of the worst queries.

Uses matplotlib's object API with the Agg canvas, so no pyplot state or process-wide backend is touched.
"""

from __future__ import annotations

import os
from typing import Dict, Optional, Sequence, Tuple

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from PIL import Image

from compressreid.errors import DataError
from compressreid.evaluation.rank import check_labels, evaluate_rank_detailed
from compressreid.evaluation.roc import RocResult, tpr_at_fpr

_FPR_MARKS = (1e-4, 1e-3, 1e-2)
_THUMB = (64, 128)  # (width, height): the usual 1:2 pedestrian crop, small enough for many rows


def _save(fig: Figure, path: str) -> str:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    FigureCanvasAgg(fig)
    fig.savefig(path, dpi=fig.dpi)
    return path


def plot_roc(roc_results: Dict[str, RocResult], path: str) -> str:
    """Overlay ROC curves (log-scale FPR) with TPR marked at FPR 1e-4 / 1e-3 / 1e-2.

    Args:
        roc_results: label -> RocResult, e.g. ``{"teacher": ..., "student": ..., "int8": ...}``.
        path: PNG file to write.

    Returns:
        ``path``.
    """
    fig = Figure(figsize=(6, 5), dpi=100)
    ax = fig.add_subplot(1, 1, 1)
    for label, roc in roc_results.items():
        # A log axis cannot show FPR = 0; the curve starts at its first non-zero point.
        shown = roc.fpr > 0
        line = ax.plot(roc.fpr[shown], roc.tpr[shown], label=f"{label} (AUC {roc.auc:.4f})")[0]
        marks = tpr_at_fpr(roc, _FPR_MARKS)
        ax.scatter(_FPR_MARKS, list(marks.values()), color=line.get_color(), s=18, zorder=3)
    for fpr in _FPR_MARKS:
        ax.axvline(fpr, color="grey", linestyle=":", linewidth=0.8)
    ax.set_xscale("log")
    ax.set_xlim(min(_FPR_MARKS) / 10, 1.0)
    ax.set_ylim(0.0, 1.01)
    ax.set_xlabel("false positive rate (cross-camera pairs)")
    ax.set_ylabel("true positive rate")
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    return _save(fig, path)


def plot_distance_distributions(
    distributions: Dict[str, Tuple[np.ndarray, np.ndarray]], path: str, bins: int = 100
) -> str:
    """Overlaid density histograms of positive (solid) and negative (dashed) pair distances per model.

    Args:
        distributions: label -> ``(pos, neg)`` as returned by ``distance_distributions``.
        path: PNG file to write.
        bins: histogram bins shared by all curves.

    Returns:
        ``path``.
    """
    fig = Figure(figsize=(7, 4), dpi=100)
    ax = fig.add_subplot(1, 1, 1)
    values = [np.asarray(a) for pair in distributions.values() for a in pair if len(a)]
    lo = min(float(v.min()) for v in values) if values else 0.0
    hi = max(float(v.max()) for v in values) if values else 1.0
    edges = np.linspace(lo, hi if hi > lo else lo + 1.0, bins + 1)
    for i, (label, (pos, neg)) in enumerate(distributions.items()):
        color = f"C{i % 10}"
        for arr, style, kind in ((pos, "-", "pos"), (neg, "--", "neg")):
            if len(arr):
                label_n = f"{label} {kind} (n={len(arr)})"
                ax.hist(arr, bins=edges, density=True, histtype="step", linestyle=style, color=color, label=label_n)
    ax.set_xlabel("distance")
    ax.set_ylabel("density")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return _save(fig, path)


def _thumb(path: str) -> np.ndarray:
    with Image.open(path) as img:
        return np.asarray(img.convert("RGB").resize(_THUMB))


def _show(ax, image_path: str, color: Optional[str], caption: str) -> None:
    ax.imshow(_thumb(image_path))
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_visible(color is not None)
        if color is not None:
            spine.set_edgecolor(color)
            spine.set_linewidth(4)
    if caption:
        ax.set_xlabel(caption, fontsize=7)


def _ranked_without_junk(dist_row, q_pid, q_cam, g_pids, g_camids) -> np.ndarray:
    order = np.argsort(dist_row, kind="stable")
    junk = (g_pids[order] == q_pid) & (g_camids[order] == q_cam)
    return order[~junk]


def plot_worst_queries(
    query_paths: Sequence[str],
    gallery_paths: Sequence[str],
    distmat,
    q_pids,
    g_pids,
    q_camids,
    g_camids,
    path: str,
    num_queries: int = 8,
    topk: int = 10,
    num_gt: int = 3,
) -> str:
    """The lowest-AP queries, one row each: query | top-k results | missed true matches.

    Results get a green border when they are true matches and red otherwise; junk (same identity and camera)
    is removed as in the rank protocol. After a blank separator come up to ``num_gt`` true matches ranked below
    the top k, best-ranked first, each captioned with its rank. Ties in AP are broken by query index.

    Returns:
        ``path``.

    Raises:
        DataError: as :func:`evaluate_rank_detailed`, or path lists whose lengths do not match ``distmat``.
    """
    distmat = np.asarray(distmat)
    result = evaluate_rank_detailed(distmat, q_pids, g_pids, q_camids, g_camids)
    q_pids, g_pids, q_camids, g_camids = check_labels(*distmat.shape, q_pids, g_pids, q_camids, g_camids)
    if len(query_paths) != distmat.shape[0] or len(gallery_paths) != distmat.shape[1]:
        raise DataError(f"{len(query_paths)} query / {len(gallery_paths)} gallery paths for distmat {distmat.shape}")
    valid_idx = np.flatnonzero(result.valid_query_mask)
    worst = valid_idx[np.argsort(result.all_AP, kind="stable")[:num_queries]]
    ap_of = dict(zip(valid_idx.tolist(), result.all_AP.tolist()))
    cols = 1 + topk + 1 + num_gt
    fig = Figure(figsize=(cols * 0.9, len(worst) * 1.9 + 0.3), dpi=100)
    for row, q in enumerate(worst):
        ranked = _ranked_without_junk(distmat[q], q_pids[q], q_camids[q], g_pids, g_camids)
        is_match = g_pids[ranked] == q_pids[q]
        base = row * cols
        _show(fig.add_subplot(len(worst), cols, base + 1), query_paths[q], None, f"q{q} AP {ap_of[int(q)]:.2f}")
        for r, g in enumerate(ranked[:topk]):
            color = "green" if is_match[r] else "red"
            _show(fig.add_subplot(len(worst), cols, base + 2 + r), gallery_paths[g], color, f"#{r + 1}")
        missed = np.flatnonzero(is_match[topk:])[:num_gt] + topk
        for j, r in enumerate(missed):
            ax = fig.add_subplot(len(worst), cols, base + topk + 3 + j)
            _show(ax, gallery_paths[ranked[r]], "green", f"rank {r + 1}")
    fig.subplots_adjust(left=0.01, right=0.99, top=0.99, bottom=0.03, wspace=0.08, hspace=0.35)
    return _save(fig, path)
