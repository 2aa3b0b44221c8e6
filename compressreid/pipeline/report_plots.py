"""Figures of the pipeline report: accuracy versus latency over the stages, and ROC / distance overlays drawn from
each stage's saved curves (plots/<dataset>_curves.json). matplotlib's object API on the Agg canvas only.
"""

from __future__ import annotations

import glob
import json
import os
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

# How the report names each built-in stage's model in legends.
MODEL_LABELS = {"teacher": "teacher", "distill": "student", "prune": "pruned", "quantize": "INT8"}


def model_label(stage: str) -> str:
    return MODEL_LABELS.get(stage, stage)


def _save(fig: Figure, path: str) -> str:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    FigureCanvasAgg(fig)
    fig.tight_layout()
    fig.savefig(path, dpi=fig.dpi)
    return path


def load_curves(folder: str, dataset: str = "") -> Optional[Dict[str, object]]:
    """A stage's saved curves for ``dataset`` (its first test set's when absent), or None."""
    preferred = os.path.join(folder, "plots", f"{dataset}_curves.json")
    found = [preferred] if dataset and os.path.isfile(preferred) else sorted(
        glob.glob(os.path.join(folder, "plots", "*_curves.json")))
    if not found:
        return None
    with open(found[0], "r", encoding="utf-8") as handle:
        return json.load(handle)


def plot_accuracy_latency(points: Sequence[Tuple[str, float, float]], path: str) -> Optional[str]:
    """mAP against latency (ms, batch 1) with one labelled point per stage; None when no stage has both."""
    if not points:
        return None
    fig = Figure(figsize=(6, 4), dpi=100)
    ax = fig.add_subplot(1, 1, 1)
    xs, ys = [p[1] for p in points], [p[2] for p in points]
    ax.plot(xs, ys, color="grey", linestyle=":", linewidth=1)
    for i, (label, x, y) in enumerate(points):
        ax.scatter([x], [y], color=f"C{i % 10}", s=40, zorder=3)
        ax.annotate(label, (x, y), textcoords="offset points", xytext=(5, 5), fontsize=9)
    ax.margins(0.15)  # room for the labels of the points at the edges
    ax.set_xlabel("latency, batch 1 (ms, ONNX Runtime on this machine)")
    ax.set_ylabel("mAP (%)")
    ax.grid(True, alpha=0.3)
    return _save(fig, path)


def plot_roc_overlay(curves: Dict[str, Dict[str, object]], path: str) -> Optional[str]:
    """Every stage's ROC on one log-FPR axis; None when no stage saved one."""
    rocs = {label: c["roc"] for label, c in curves.items() if c.get("roc")}
    if not rocs:
        return None
    fig = Figure(figsize=(6, 5), dpi=100)
    ax = fig.add_subplot(1, 1, 1)
    for i, (label, roc) in enumerate(rocs.items()):
        ax.step(roc["fpr"], roc["tpr"], where="post", label=f"{label} (AUC {roc['auc']:.4f})", color=f"C{i % 10}")
        for point in roc.get("operating_points", []):  # where a tracker's match threshold puts each model
            ax.plot([point["fpr"]], [point["tpr"]], "o", color=f"C{i % 10}", markersize=4)
            ax.annotate(f"d<={point['threshold']:.3f}", (point["fpr"], point["tpr"]), fontsize=6,
                        textcoords="offset points", xytext=(3, -9), color=f"C{i % 10}")
    ax.set_xscale("log")
    ax.set_xlim(1e-5, 1.0)
    ax.set_ylim(0.0, 1.01)
    ax.set_xlabel("false positive rate (cross-camera pairs)")
    ax.set_ylabel("true positive rate")
    ax.grid(True, alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    return _save(fig, path)


def plot_distance_overlay(curves: Dict[str, Dict[str, object]], path: str) -> Optional[str]:
    """Every stage's positive (solid) and negative (dashed) distance densities; None when none was saved."""
    hists = {label: c["distances"] for label, c in curves.items() if c.get("distances")}
    if not hists:
        return None
    fig = Figure(figsize=(7, 4), dpi=100)
    ax = fig.add_subplot(1, 1, 1)
    for i, (label, h) in enumerate(hists.items()):
        edges = np.asarray(h["edges"])
        for key, style in (("pos", "-"), ("neg", "--")):
            values = np.asarray(h[key])
            ax.stairs(values, edges, linestyle=style, color=f"C{i % 10}",
                      label=f"{label} {key} (n={h[f'num_{key}']})")
    ax.set_xlabel("distance")
    ax.set_ylabel("density")
    ax.legend(fontsize=8)
    return _save(fig, path)


def worst_queries_image(folders: Sequence[str], dataset: str = "") -> Optional[str]:
    """The worst-query rank lists of the last folder that has them (the furthest stage of the chain)."""
    for folder in reversed(list(folders)):
        preferred = os.path.join(folder, "plots", f"{dataset}_worst_queries.png")
        if dataset and os.path.isfile(preferred):
            return preferred
        found: List[str] = sorted(glob.glob(os.path.join(folder, "plots", "*_worst_queries.png")))
        if found:
            return found[0]
    return None
