"""Range checks of the budgets a run reads (epochs, batches, iterations, image counts), made when a config is loaded.

A value outside its range does not fail loudly where it is used: ``SOLVER.MAX_EPOCH -1`` trains a negative number
of iterations, i.e. none, and ships the untrained model. So each is refused here, in one line naming the key and
the range, before any folder is written.
"""

from __future__ import annotations

import math
from typing import Tuple

from yacs.config import CfgNode

from compressreid.errors import ConfigError

# (key, smallest allowed value, what the key counts). Keys whose 0 has a meaning say so.
AT_LEAST: Tuple[Tuple[str, int, str], ...] = (
    ("SOLVER.MAX_EPOCH", 1, "training epochs"),
    ("SOLVER.ITERS_PER_EPOCH", 0, "iterations per epoch; 0 = derived from the training set"),
    ("SOLVER.IMS_PER_BATCH", 1, "images per training batch"),
    ("SOLVER.CHECKPOINT_PERIOD", 0, "epochs between checkpoints; 0 = only at the end"),
    ("SOLVER.WARMUP_ITERS", 0, "warmup iterations"),
    ("SOLVER.FREEZE_ITERS", 0, "iterations with MODEL.FREEZE_LAYERS frozen"),
    ("SOLVER.DELAY_EPOCHS", 0, "epochs before the LR schedule starts"),
    ("TEST.IMS_PER_BATCH", 1, "images per feature-extraction batch"),
    ("TEST.EVAL_PERIOD", 0, "epochs between evaluations; 0 = only at the end"),
    ("TEST.MAX_RANK", 1, "ranks of the CMC curve"),
    ("TEST.TOPK", 0, "gallery entries searched per query; 0 = all"),
    ("TEST.WORST_QUERIES", 0, "worst queries drawn"),
    ("DATALOADER.NUM_INSTANCE", 1, "images per identity in a P x K batch"),
    ("DATALOADER.NUM_WORKERS", 0, "loader processes; 0 = load in the main process"),
    ("PRUNE.STEPS", 1, "pruning steps"),
    ("PRUNE.FINETUNE_ITERS", 0, "fine-tuning iterations after each pruning step; 0 = none"),
    ("PRUNE.ROUND_TO", 1, "channel multiple of pruned widths"),
    ("QUANT.QAT.ITERS", 1, "QAT fine-tuning iterations"),
    ("QUANT.QAT.FREEZE_BN_ITER", 0, "iteration at which QAT freezes BN statistics"),
    ("QUANT.QAT.FREEZE_OBSERVER_ITER", 0, "iteration at which QAT freezes activation ranges"),
    ("QUANT.CALIBRATION.NUM_IMAGES", 1, "calibration images"),
    ("QUANT.CALIBRATION.BATCH_SIZE", 1, "images per calibration batch"),
    ("QUANT.BENCHMARK.ITERS", 1, "timed runs per latency measurement"),
    ("QUANT.BENCHMARK.THREADS", 0, "ONNX Runtime threads; 0 = its default"),
)
# (key, what it is): finite and > 0.
POSITIVE: Tuple[Tuple[str, str], ...] = (
    ("SOLVER.BASE_LR", "the training learning rate"),
    ("QUANT.QAT.BASE_LR", "the QAT learning rate"),
)


def _value(cfg: CfgNode, key: str) -> object:
    node: object = cfg
    for part in key.split("."):
        node = node[part]  # type: ignore[index]
    return node


def validate_config(cfg: CfgNode) -> None:
    """Check every budget of ``cfg`` is in its range.

    Raises:
        ConfigError: the first key out of range, with the range and the value it got.
    """
    for key, lowest, meaning in AT_LEAST:
        value = _value(cfg, key)
        if value < lowest:  # type: ignore[operator]
            raise ConfigError(f"{key} must be >= {lowest} ({meaning}), got {value}")
    for key, meaning in POSITIVE:
        value = _value(cfg, key)
        if not (math.isfinite(value) and value > 0):  # type: ignore[arg-type, operator]
            raise ConfigError(f"{key} must be a finite number > 0 ({meaning}), got {value}")
