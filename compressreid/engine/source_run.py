"""The input of a later stage (prune, quantize): a finished run folder's config and model, rebuilt and loaded.

A pruned run's checkpoint carries its pruning history; the model is rebuilt from the registry, the history
replayed on it, and the weights loaded strictly: a pruned model is never unpickled.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Optional

from torch import nn
from yacs.config import CfgNode

from compressreid.checkpoint import load_checkpoint, load_state_dict_checked, read_checkpoint
from compressreid.config import load_config
from compressreid.engine.resume import FINAL_MODEL
from compressreid.engine.run_dir import STATUS_FILE, read_status
from compressreid.errors import CheckpointError, ConfigError
from compressreid.modeling import build_model

logger = logging.getLogger(__name__)

RUN_CONFIG = "config.yaml"
# Key of a pruned checkpoint holding the replayable pruning history (written by compressreid.prune).
PRUNING_HISTORY = "pruning_history"


@dataclass(frozen=True)
class SourceRun:
    """Where a stage's input model comes from.

    Attributes:
        config: the model's own merged config (its run folder's config.yaml, or the stage config itself).
        weights: its checkpoint.
        folder: the run folder, or "" when the model came from the stage config's MODEL.WEIGHTS.
        strict: a missing or unexpected key is an error (the loading run's MODEL.LOAD_STRICT).
        allow_unsafe: the checkpoint may need arbitrary unpickling (the user trusts it: --allow-unsafe-checkpoint).
    """

    config: CfgNode
    weights: str
    folder: str = ""
    strict: bool = True
    allow_unsafe: bool = False

    @property
    def label(self) -> str:
        return self.folder or self.weights


def resolve_source(entry: str, cfg: CfgNode, key: str, require_accepted: bool = True,
                   allow_unsafe: bool = False) -> SourceRun:
    """``entry`` (a run folder, e.g. PRUNE.SOURCE) or, when empty, ``cfg`` itself with its MODEL.WEIGHTS.

    Args:
        require_accepted: refuse a compressreid run folder whose own gates rejected it (or that never finished):
            compressing it would ship a model its stage already refused. The report, which shows rejected
            stages too, passes False.
        allow_unsafe: see ``SourceRun``; strictness is ``cfg``'s MODEL.LOAD_STRICT (the loading run's choice).

    Raises:
        ConfigError: the folder has no config.yaml, was not accepted, or no checkpoint is named.
        CheckpointError: the checkpoint file is missing.
    """
    if entry:
        config_path = os.path.join(entry, RUN_CONFIG)
        if not os.path.isdir(entry) or not os.path.isfile(config_path):
            raise ConfigError(f"{key}: '{entry}' is not a run folder (expected {RUN_CONFIG} and {FINAL_MODEL} in it)")
        status = read_status(entry)
        if require_accepted and status not in ("", "accepted", "ungated"):
            raise ConfigError(f"{key}: the run in '{entry}' is '{status}' ({STATUS_FILE}), not accepted: its own gates "
                              "refused it (or it did not finish); name an accepted run")
        if require_accepted and status == "ungated":  # named explicitly by the user (or PIPELINE.ALLOW_UNGATED)
            logger.warning("%s: the run in '%s' is UNGATED (it had no TEST.GATES): nothing judged it", key, entry)
        source = SourceRun(load_config(config_path), os.path.join(entry, FINAL_MODEL), entry,
                           cfg.MODEL.LOAD_STRICT, allow_unsafe)
    else:
        if not cfg.MODEL.WEIGHTS:
            raise ConfigError(f"{key} is empty and MODEL.WEIGHTS is empty: name the run folder of the model to use")
        source = SourceRun(cfg, cfg.MODEL.WEIGHTS, "", cfg.MODEL.LOAD_STRICT, allow_unsafe)
    if not os.path.isfile(source.weights):
        raise CheckpointError(f"{key}: checkpoint not found: {source.weights}")
    return source


def load_source_model(source: SourceRun, num_classes: Optional[int] = None) -> nn.Module:
    """Build the source's model (replaying its pruning history if it has one) and load its weights, strictly
    unless ``source.strict`` is False (a pruned model always strictly: its history must fit its weights).

    Args:
        num_classes: keep a classifier of this size (fine-tuning); None = the config's (usually none).

    Raises:
        CheckpointError: an unreadable or unsafe file, or weights that do not fit the model.
    """
    checkpoint = read_checkpoint(source.weights, source.allow_unsafe)
    model = build_model(source.config, num_classes)
    history = checkpoint.get(PRUNING_HISTORY)
    if history is None:
        load_checkpoint(model, source.weights, allow_unsafe=source.allow_unsafe, strict=source.strict)
        return model
    from compressreid.prune.history import apply_pruning_history  # only pruned sources need Torch-Pruning

    apply_pruning_history(model, history)
    report = load_state_dict_checked(model, checkpoint["model"], source.weights)
    if report.missing or report.unexpected:
        raise CheckpointError(f"{source.weights}: the pruned weights do not fit the model rebuilt from its history: "
                              f"missing {report.missing[:3]}, unexpected {report.unexpected[:3]}")
    return model
