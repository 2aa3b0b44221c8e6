"""Any timm model as a ReID backbone (``MODEL.BACKBONE.NAME: timm``, model name in ``TIMM_NAME``).

Built with ``pretrained=False`` unless MODEL.BACKBONE.PRETRAIN_PATH names a local weight file, which
timm loads through ``pretrained_cfg_overlay={"file": path}``: nothing is ever downloaded.
"""

from __future__ import annotations

import os

import timm
import torch
from torch import nn
from yacs.config import CfgNode

from compressreid.errors import ConfigError
from compressreid.modeling.backbones.pretrained import resolve_pretrain_path
from compressreid.modeling.backbones.registry import BACKBONES
from compressreid.modeling.contract import FeatureInfo


class TimmBackbone(nn.Module):
    """A timm ``features_only`` model; returns its last feature map and declares every tap."""

    def __init__(self, model_name: str, pretrain_path: str = ""):
        super().__init__()
        if not model_name:
            raise ConfigError("MODEL.BACKBONE.TIMM_NAME is empty; name a timm model, e.g. mobilenetv3_small_100")
        if model_name not in timm.list_models():
            raise ConfigError(f"MODEL.BACKBONE.TIMM_NAME '{model_name}' is not a timm model")
        kwargs = {"pretrained": False}
        if pretrain_path:
            if not os.path.isfile(pretrain_path):
                raise ConfigError(f"MODEL.BACKBONE.PRETRAIN_PATH not found: {pretrain_path}")
            kwargs = {"pretrained": True, "pretrained_cfg_overlay": {"file": pretrain_path}}
        self.body = timm.create_model(model_name, features_only=True, **kwargs)
        info = self.body.feature_info
        self.out_channels = info.channels()[-1]
        self.feature_info = [FeatureInfo(self._module_path(name), c, r)
                             for name, c, r in zip(info.module_name(), info.channels(), info.reduction())]

    def _module_path(self, name: str) -> str:
        # timm's FeatureListNet flattens nested names ("blocks.1" -> "blocks_1"); others keep them
        for candidate in (name, name.replace(".", "_")):
            try:
                self.body.get_submodule(candidate)
                return f"body.{candidate}"
            except AttributeError:
                continue
        raise ConfigError(f"timm feature tap '{name}' not found in the backbone")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)[-1]


@BACKBONES.register("timm")
def build_timm_backbone(cfg: CfgNode, pretrained: bool = False) -> TimmBackbone:
    # same PRETRAIN / PRETRAIN_PATH rules as the ResNet builder (read only when PRETRAIN is True, never downloaded)
    return TimmBackbone(cfg.MODEL.BACKBONE.TIMM_NAME, resolve_pretrain_path(cfg) if pretrained else "")
