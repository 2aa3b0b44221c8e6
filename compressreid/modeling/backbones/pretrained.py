"""ImageNet initialisation of backbones from a local file (``MODEL.BACKBONE.PRETRAIN_PATH``); never a download.

ResNet files are recognised by explicit key signatures: torchvision and timm ResNets (``conv1``, ``layerN.M.*``,
``fc``) and IBN-Net's IBN-a ResNets (``layerN.M.bn1.IN``/``bn1.BN``) share compressreid's parameter names, so
their maps are the identity minus the ImageNet classifier ``fc.*``. Layouts that do not share them (timm's
deep-stem ``resnet*d``, IBN-b) are refused with the reason instead of loading partially.
"""

from __future__ import annotations

import logging
import os
from typing import Dict, Mapping

import torch
from torch import nn
from yacs.config import CfgNode

from compressreid.checkpoint import LoadReport, load_state_dict_checked, read_checkpoint
from compressreid.errors import CheckpointError, ConfigError

logger = logging.getLogger(__name__)

# Containers the released files wrap their state dict in (IBN-Net's .pth.tar: "state_dict").
_WRAPPER_KEYS = ("state_dict", "model")
_DATA_PARALLEL_PREFIX = "module."
_IMAGENET_CLASSIFIER_PREFIX = "fc."


def resolve_pretrain_path(cfg: CfgNode) -> str:
    """The local ImageNet weight file to load, or "" when the backbone should start from random weights.

    fast-reid semantics: PRETRAIN_PATH is read only when PRETRAIN is True. Only training calls this (through
    ``build_model(..., pretrained=True)``), so loading a finished model never needs the ImageNet file that a
    fast-reid config dump names.

    Raises:
        ConfigError: PRETRAIN is True with an empty or missing PRETRAIN_PATH (compressreid never downloads).
    """
    bb = cfg.MODEL.BACKBONE
    if not bb.PRETRAIN:
        if bb.PRETRAIN_PATH:
            logger.info("MODEL.BACKBONE.PRETRAIN_PATH %s is ignored: MODEL.BACKBONE.PRETRAIN is False", bb.PRETRAIN_PATH)
        return ""
    if not bb.PRETRAIN_PATH:
        raise ConfigError("MODEL.BACKBONE.PRETRAIN is True but MODEL.BACKBONE.PRETRAIN_PATH is empty; compressreid "
                          "never downloads: name a local torchvision/timm/IBN-Net file, or set PRETRAIN False")
    if not os.path.isfile(bb.PRETRAIN_PATH):
        raise ConfigError(f"MODEL.BACKBONE.PRETRAIN_PATH not found: {bb.PRETRAIN_PATH}")
    return bb.PRETRAIN_PATH


def read_state_dict(path: str) -> Dict[str, torch.Tensor]:
    """Tensors of a weight file: ``.safetensors`` (timm's hub format) or a torch file read with weights_only."""
    if path.endswith(".safetensors"):
        from safetensors.torch import load_file  # installed with timm

        return dict(load_file(path))
    data = read_checkpoint(path)
    for key in _WRAPPER_KEYS:
        if isinstance(data.get(key), dict):
            data = data[key]
            break
    if data and all(k.startswith(_DATA_PARALLEL_PREFIX) for k in data):
        data = {k[len(_DATA_PARALLEL_PREFIX):]: v for k, v in data.items()}
    return dict(data)


def detect_resnet_format(state: Mapping[str, torch.Tensor], source: str) -> str:
    """"ibn-net" or "torchvision" (timm ResNets share torchvision's names); refuses other layouts.

    Raises:
        CheckpointError: not a ResNet state dict, or a ResNet layout whose names differ from ours.
    """
    keys = set(state)
    if "conv1.0.weight" in keys:
        raise CheckpointError(f"{source}: a deep-stem ResNet (timm resnet*d, keys conv1.0/1/3); "
                              "compressreid's ResNet has a single 7x7 stem conv")
    if "layer1.0.IN.weight" in keys:
        raise CheckpointError(f"{source}: an IBN-b ResNet (InstanceNorm after the block, layer1.0.IN); "
                              "compressreid implements IBN-a only")
    if "conv1.weight" not in keys or "layer1.0.conv1.weight" not in keys:
        raise CheckpointError(f"{source}: not a ResNet state dict (no conv1.weight / layer1.0.conv1.weight)")
    return "ibn-net" if "layer1.0.bn1.IN.weight" in keys else "torchvision"


def load_pretrained_resnet(backbone: nn.Module, path: str) -> LoadReport:
    """Load a torchvision, timm or IBN-Net ResNet file into ``backbone``; ``fc.*`` is ignored, the rest reported.

    Raises:
        CheckpointError: unreadable file, unsupported layout, or shapes that do not fit (e.g. WIDTH != 1).
    """
    state = read_state_dict(path)
    fmt = detect_resnet_format(state, path)
    ignored = sorted(k for k in state if k.startswith(_IMAGENET_CLASSIFIER_PREFIX))
    state = {k: v for k, v in state.items() if not k.startswith(_IMAGENET_CLASSIFIER_PREFIX)}
    logger.info("%s: %s ResNet weights; ignoring the ImageNet classifier %s", path, fmt, ", ".join(ignored) or "-")
    report = load_state_dict_checked(backbone, state, path, skip_classifier_mismatch=False)
    report.format = fmt
    return report
