"""Initialise a student backbone from a local ImageNet weight file through an explicit key map (never downloads)."""

from __future__ import annotations

import logging
import os
from typing import Callable, Dict, Optional

import torch
from torch import nn

from compressreid.checkpoint import LoadReport, load_state_dict_checked, read_checkpoint
from compressreid.errors import CheckpointError, ConfigError

logger = logging.getLogger(__name__)

# Maps a key of the source file to the backbone's key, or None for a key dropped on purpose (an ImageNet
# classifier, say); dropped keys are reported as ``skipped``.
KeyMap = Callable[[str], Optional[str]]


def read_state_dict(path: str) -> Dict[str, torch.Tensor]:
    """Read a plain state dict (or ``{"state_dict": ...}``) with ``weights_only=True``.

    Raises:
        ConfigError: the file does not exist (MODEL.BACKBONE.PRETRAIN_PATH names it).
        CheckpointError: the file is unreadable or holds no tensors.
    """
    if not os.path.isfile(path):
        raise ConfigError(f"MODEL.BACKBONE.PRETRAIN_PATH not found: {path}")
    data = read_checkpoint(path)
    state = data.get("state_dict", data)
    if not isinstance(state, dict) or not any(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{path}: expected a state dict of tensors")
    # DataParallel checkpoints prefix every key with "module."; nothing else is rewritten implicitly
    return {k[len("module."):] if k.startswith("module.") else k: v for k, v in state.items()}


def load_backbone_weights(backbone: nn.Module, path: str, key_map: KeyMap) -> LoadReport:
    """Load ``path`` into ``backbone`` after renaming every key with ``key_map``; shapes must match.

    Returns:
        What did not transfer (missing, unexpected, skipped); each list is logged.
    Raises:
        ConfigError: missing file. CheckpointError: unreadable file, shape mismatch, or no key matched.
    """
    mapped, skipped = {}, []
    for key, value in read_state_dict(path).items():
        target = key_map(key)
        if target is None:
            skipped.append(key)
        else:
            mapped[target] = value
    report = load_state_dict_checked(backbone, mapped, path, skip_classifier_mismatch=False)
    report.skipped.extend(skipped)
    if len(report.missing) == len(backbone.state_dict()):
        raise CheckpointError(f"{path}: no key matched the {type(backbone).__name__} backbone (wrong file?)")
    logger.info("%s: loaded %d tensors into %s (%d missing, %d unexpected, %d skipped)", path,
                len(backbone.state_dict()) - len(report.missing), type(backbone).__name__, len(report.missing),
                len(report.unexpected), len(skipped))
    return report
