"""Checkpoints: written atomically, read safely (``weights_only=True``), keys mapped per source format and reported.

A compressreid checkpoint is ``{"model": state_dict, ...extra state}``; fast-reid checkpoints are the same
shape (with ``optimizer``, ``scheduler``, ``iteration``, ... beside ``model``), so both load through
``load_checkpoint``. Older fast-reid layouts are recognised and renamed by ``compressreid.checkpoint_formats``.
"""

from __future__ import annotations

import logging
import os
import pickle
import re
from dataclasses import dataclass, field
from typing import Dict, List

import torch
from torch import nn

from compressreid.checkpoint_formats import (CLASSIFIER_KEYS, PIXEL_STAT_KEYS, check_reduction_stack, detect_format,
                                             strip_data_parallel_prefix)
from compressreid.engine.io import atomic_torch_save
from compressreid.errors import CheckpointError

logger = logging.getLogger(__name__)


@dataclass
class LoadReport:
    """What a load did: every key that did not transfer is named, never silently dropped.

    ``format`` names the detected source format (not part of equality, so reports compare by keys).
    """

    missing: List[str] = field(default_factory=list)
    unexpected: List[str] = field(default_factory=list)
    skipped: List[str] = field(default_factory=list)
    format: str = field(default="", compare=False)


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
        first = _unpickling_reason(str(exc))
        raise CheckpointError(
            f"checkpoint {path} needs arbitrary unpickling, refused for safety ({first}); if you trust the file, "
            "rerun with --allow-unsafe-checkpoint (Python: allow_unsafe=True)"
        ) from None
    except (RuntimeError, EOFError, OSError) as exc:
        raise CheckpointError(f"checkpoint {path} is not a readable torch file: {exc}") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"checkpoint {path} holds a {type(data).__name__}, expected a dict")
    return data


def _unpickling_reason(text: str) -> str:
    """What torch's weights_only loader refused (e.g. "Unsupported global: GLOBAL argparse.Namespace ..."), not
    its multi-line advice, which suggests loading unsafely in general."""
    for line in text.splitlines():
        if "WeightsUnpickler error:" in line:
            return line.split("WeightsUnpickler error:", 1)[1].strip().split(". ")[0]
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return re.sub(r"\x1b\[[0-9;]*m", "", lines[0]) if lines else "unsupported content"


def _is_skippable_classifier(key: str, value: torch.Tensor, own: Dict[str, torch.Tensor]) -> bool:
    """A classifier sized for another identity set: same feature width, another number of rows."""
    return key in CLASSIFIER_KEYS and value.ndim == 2 and own[key].ndim == 2 and value.shape[1] == own[key].shape[1]


def load_state_dict_checked(model: nn.Module, state: Dict[str, torch.Tensor], source: str,
                            skip_classifier_mismatch: bool = True) -> LoadReport:
    """Load ``state`` (already in compressreid's names) into ``model`` strictly by name.

    Shape mismatches raise, naming the first keys, and leave the model untouched. A classifier sized for
    another dataset (``heads.weight``), or one the model does not have, is skipped and reported.
    """
    own = model.state_dict()
    report = LoadReport()
    mismatched = []
    filtered = {}
    for key, value in state.items():
        if key not in own:
            if key in CLASSIFIER_KEYS:  # a model built without a classifier (inference, distillation)
                report.skipped.append(key)
            else:
                report.unexpected.append(key)
        elif own[key].shape != value.shape:
            if skip_classifier_mismatch and _is_skippable_classifier(key, value, own):
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


def _plan_pixel_stats(model: nn.Module, stats: Dict[str, torch.Tensor], source: str):
    """Checked (normalizer, name, value) triples, built before anything is loaded so a bad file changes nothing."""
    # modules owning pixel_mean/pixel_std buffers: compressreid's PixelNormalizer (not imported: modeling
    # imports this module for backbone pretraining)
    normalizers = [m for m in model.modules() if all(k in m._buffers for k in PIXEL_STAT_KEYS)]
    plan = []
    for key, value in sorted(stats.items()):
        for normalizer in normalizers:
            current = getattr(normalizer, key)
            if value.numel() != current.numel():
                raise CheckpointError(f"{source}: {key} has {value.numel()} values, the model expects {current.numel()}")
            plan.append((normalizer, key, value.to(current.dtype).view_as(current)))
    return normalizers, plan


def _apply_pixel_stats(plan, source: str) -> None:
    """Older fast-reid saved its normalisation with the weights; the model then uses the stored values."""
    with torch.no_grad():
        for normalizer, key, value in plan:
            current = getattr(normalizer, key)
            if not torch.allclose(value, current):
                logger.warning("%s: using the checkpoint's %s %s instead of the config's %s", source, key,
                               [round(v, 4) for v in value.flatten().tolist()],
                               [round(v, 4) for v in current.flatten().tolist()])
            current.copy_(value)


def load_checkpoint(model: nn.Module, path: str, allow_unsafe: bool = False, strict: bool = False) -> LoadReport:
    """Load a compressreid or fast-reid checkpoint (any supported generation) into ``model``.

    The source format is detected from explicit key signatures and logged; keys are renamed by that
    format's map. Returns what did not transfer.

    Args:
        allow_unsafe: opt in to arbitrary unpickling (only for files you trust).
        strict: raise if any key is missing or unexpected (a classifier the file lacks, or sizes for another
            dataset, is still allowed).

    Raises:
        CheckpointError: unreadable or unsafe file, unsupported format, shape mismatch, or (strict) key mismatch.
    """
    data = read_checkpoint(path, allow_unsafe)
    state = data.get("model", data)
    if not isinstance(state, dict):
        raise CheckpointError(f"checkpoint {path}: 'model' is a {type(state).__name__}, expected a state dict")
    state = strip_data_parallel_prefix(state)
    fmt = detect_format(state)
    logger.info("%s: checkpoint format '%s' (%s)", path, fmt.name, fmt.description)
    try:
        converted = fmt.convert(state)
        check_reduction_stack(model.state_dict(), converted.state)
    except CheckpointError as exc:
        raise CheckpointError(f"{path}: {exc}") from None
    normalizers, pixel_plan = _plan_pixel_stats(model, converted.pixel_stats, path)
    report = load_state_dict_checked(model, converted.state, path)
    report.format = fmt.name
    if converted.pixel_stats and not normalizers:  # a bare backbone: nothing normalises inside it
        report.unexpected.extend(sorted(converted.pixel_stats))
        logger.warning("%s: unexpected key(s) %s: the model has no PixelNormalizer", path, sorted(converted.pixel_stats))
    _apply_pixel_stats(pixel_plan, path)
    # a classifier the file lacks is the same case as one sized for another dataset: it is not part of the
    # embedding, and a model built with one (fine-tuning, distillation) trains it from its initialisation
    missing = [key for key in report.missing if key not in CLASSIFIER_KEYS]
    if strict and (missing or report.unexpected):
        raise CheckpointError(key_mismatch_message(path, missing, report.unexpected))
    return report


def key_mismatch_message(path: str, missing: List[str], unexpected: List[str]) -> str:
    """One line naming how many keys are missing / unexpected and the first few, and how to load anyway."""
    parts = [f"{len(keys)} {kind} key(s) (first: {', '.join(keys[:3])})"
             for kind, keys in (("missing", missing), ("unexpected", unexpected)) if keys]
    return (f"{path} does not fit the model (strict load): {'; '.join(parts)}; check the config describes the "
            "checkpoint's model, or set MODEL.LOAD_STRICT False to load it partially")
