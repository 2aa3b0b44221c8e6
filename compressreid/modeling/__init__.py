"""Models: the shared contract, backbones, heads, meta-architectures and ``build_model``."""

from __future__ import annotations

from yacs.config import CfgNode

from compressreid.modeling.contract import BranchOutput, FeatureInfo, ModelOutput, ReIDModel
from compressreid.modeling.meta_arch import META_ARCHITECTURES
from compressreid.modeling.backbones import BACKBONES
from compressreid.modeling.heads import HEADS


def build_model(cfg: CfgNode, num_classes: int | None = None, pretrained: bool = False) -> ReIDModel:
    """Build the model the config describes.

    Args:
        num_classes: training identities, derived from the data by the caller; defaults to
            MODEL.HEADS.NUM_CLASSES (0 = no classifier, enough for inference and evaluation).
        pretrained: initialise the backbone from MODEL.BACKBONE.PRETRAIN_PATH when MODEL.BACKBONE.PRETRAIN
            is True. Training asks for it; loading a finished model does not, so a fast-reid config dump
            naming an ImageNet file that is not on this machine still builds.
    """
    if num_classes is None:
        num_classes = cfg.MODEL.HEADS.NUM_CLASSES
    return META_ARCHITECTURES.get(cfg.MODEL.META_ARCHITECTURE).from_config(cfg, num_classes, pretrained=pretrained)


__all__ = ["build_model", "ReIDModel", "ModelOutput", "BranchOutput", "FeatureInfo",
           "META_ARCHITECTURES", "BACKBONES", "HEADS"]

# Model families outside the core package register themselves on import.
import compressreid.students  # noqa: E402,F401
import compressreid.teachers  # noqa: E402,F401
