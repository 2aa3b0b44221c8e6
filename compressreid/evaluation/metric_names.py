"""The metric names an evaluation will report, known from the config before anything runs, so a gate rule naming
a metric no stage reports (``mAp``) is refused in seconds instead of after hours of training."""

from __future__ import annotations

from typing import List

from yacs.config import CfgNode

from compressreid.evaluation.collapse import COLLAPSE_METRICS

RANK_METRICS = ("mAP", "rank1", "rank5", "rank10", "mINP")
COUNTS = ("num_query", "num_gallery", "num_valid_queries", "num_skipped_queries")
FPR_POINTS = (1e-4, 1e-3, 1e-2)
# Test sets whose query records carry the black-clothes flag (compressreid.evaluation.subsets)
FLAGGED_SETS = ("Synthetic",)
SUBSET_METRICS = ("black_mAP", "black_rank1", "black_rank5", "black_mINP", "black_num_query",
                  "black_num_valid_queries")


def roc_metric_names() -> List[str]:
    names = [f"TPR@FPR={p:.0e}" for p in FPR_POINTS]
    return names + [f"threshold@FPR={p:.0e}" for p in FPR_POINTS]


def evaluation_metric_names(cfg: CfgNode) -> List[str]:
    """Every metric ReIDEvaluator reports for this config's test sets."""
    t = cfg.TEST
    names = [*RANK_METRICS, *COUNTS, *COLLAPSE_METRICS]
    if t.TOPK > 0:
        names += ["topk", "topk_incomplete_queries"]
        if getattr(t, "GALLERY_STORAGE", "fp32") != "fp32":
            names += ["rescore_window", "rescore_unproven_queries"]
    elif t.ROC.ENABLED:
        names += roc_metric_names()
    if any(name in FLAGGED_SETS for name in cfg.DATASETS.TESTS):
        names += list(SUBSET_METRICS)
    return names
