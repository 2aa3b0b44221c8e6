"""Checkpoints: written atomically, read safely (``weights_only=True``), keys checked and reported.

A compressreid checkpoint is ``{"model": state_dict, ...extra state}``; fast-reid checkpoints are the
same shape, so both load through ``load_checkpoint``.
"""

from __future__ import annotations

import logging
import os
import pickle
from dataclasses import dataclass, field
from typing import Dict, List

import torch
from torch import nn

from compressreid.engine.io import atomic_torch_save
from compressreid.errors import CheckpointError

logger = logging.getLogger(__name__)

# Identity classifiers: sized for the training set, unused by the eval embedding.
_CLASSIFIER_KEYS = ("heads.weight", "heads.classifier.weight")


@dataclass
class LoadReport:
    """What a load did: every key that did not transfer is named, never silently dropped."""

    missing: List[str] = field(default_factory=list)
    unexpected: List[str] = field(default_factory=list)
    skipped: List[str] = field(default_factory=list)


def save_checkpoint(path: str, model: nn.Module, **extra) -> str:
    """Atomically write ``{"model": model.state_dict(), **extra}``."""
    return atomic_torch_save(path, {"model": model.state_dict(), **extra})


def read_checkpoint(path: str, allow_unsafe: bool = False) -> Dict[str, object]:
    """Load a checkpoint file as a dict, with ``weights_only=True`` unless explicitly opted out.

    Raises:
        CheckpointError: missing file, or a file that needs arbitrary unpickling.
    """
    if not os.path.isfile(path):
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        data = torch.load(path, map_location="cpu", weights_only=not allow_unsafe)
    except pickle.UnpicklingError as exc:
        first = str(exc).strip().splitlines()[0]
        raise CheckpointError(
            f"checkpoint {path} needs arbitrary unpickling, refused for safety ({first}); "
            "if you trust the file, opt in with allow_unsafe=True"
        ) from None
    except (RuntimeError, EOFError, OSError) as exc:
        raise CheckpointError(f"checkpoint {path} is not a readable torch file: {exc}") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"checkpoint {path} holds a {type(data).__name__}, expected a dict")
    return data


def load_state_dict_checked(model: nn.Module, state: Dict[str, torch.Tensor], source: str,
                            skip_classifier_mismatch: bool = True) -> LoadReport:
    """Load ``state`` into ``model`` strictly by name; shape mismatches raise, naming the first keys.

    A classifier sized for another dataset (``heads.weight``) is skipped and reported when allowed.
    """
    own = model.state_dict()
    report = LoadReport()
    mismatched = []
    filtered = {}
    for key, value in state.items():
        if key not in own:
            if key in _CLASSIFIER_KEYS:  # a model built without a classifier (inference, distillation)
                report.skipped.append(key)
            else:
                report.unexpected.append(key)
        elif own[key].shape != value.shape:
            if skip_classifier_mismatch and key.startswith("heads.") and key.endswith("weight") and value.ndim == 2:
                report.skipped.append(key)
            else:
                mismatched.append(f"{key}: checkpoint {tuple(value.shape)} vs model {tuple(own[key].shape)}")
        else:
            filtered[key] = value
    if mismatched:
        raise CheckpointError(f"{source}: shape mismatch in {len(mismatched)} key(s), first: {'; '.join(mismatched[:3])}")
    report.missing = [k for k in own if k not in filtered and k not in report.skipped]
    model.load_state_dict(filtered, strict=False)
    for kind in ("missing", "unexpected", "skipped"):
        keys = getattr(report, kind)
        if keys:
            logger.warning("%s: %d %s key(s): %s", source, len(keys), kind, ", ".join(keys[:10]))
    return report


def load_checkpoint(model: nn.Module, path: str, allow_unsafe: bool = False) -> LoadReport:
    """Load a compressreid or fast-reid checkpoint into ``model``; returns what did not transfer."""
    data = read_checkpoint(path, allow_unsafe)
    state = data.get("model", data)
    if not isinstance(state, dict):
        raise CheckpointError(f"checkpoint {path}: 'model' is a {type(state).__name__}, expected a state dict")
    return load_state_dict_checked(model, state, path)
