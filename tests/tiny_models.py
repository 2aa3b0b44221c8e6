"""Shared helpers for tests that build tiny untrained models (importable: pytest puts tests/ on sys.path for
the suite-wide conftest.py)."""

import time
from typing import Sequence

import torch

from compressreid.config import get_cfg
from compressreid.export.onnx_export import example_images
from compressreid.modeling import build_model


def warm_backbone_norms(model: torch.nn.Module, input_size: Sequence[int]) -> torch.nn.Module:
    """Give the backbone's BatchNorms one batch's statistics, as a trained backbone has.

    Fresh BNs are identities and let activations grow to ~1e2, where float32 rounding alone exceeds the 1e-4
    ONNX parity bound; one batch's statistics give unit-scale features. The BNNeck keeps its identity
    statistics: on noise images pooled features barely vary, and a BNNeck fit to them would amplify rounding
    by ~100x (real images do not have that problem). Returns the model in eval mode.
    """
    norms = [m for m in model.backbone.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    for norm in norms:
        norm.momentum = None  # cumulative average: after one batch the statistics are that batch's
    model.backbone.train()
    with torch.no_grad():
        model.backbone(model.preprocess(example_images(input_size, 8, seed=5)))
    for norm in norms:
        norm.momentum = 0.1
    return model.eval()


def tiny_resnet18(input_size: Sequence[int]) -> torch.nn.Module:
    """A ResNet-18 at 1/8 width with a BNNeck head and no classifier, seed 0, norms warmed, in eval mode."""
    cfg = get_cfg()
    cfg.MODEL.BACKBONE.DEPTH = "18x"
    cfg.MODEL.BACKBONE.WIDTH = 0.125
    cfg.INPUT.SIZE_TEST = list(input_size)
    torch.manual_seed(0)
    return warm_backbone_norms(build_model(cfg, num_classes=0), input_size)


class Sleeper(torch.nn.Module):
    """An embedding model whose call takes at least ``ms`` milliseconds, whatever the machine's load (for tests of
    timing logic: a slower file that is slower by construction)."""

    def __init__(self, ms: float):
        super().__init__()
        self.ms = ms

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        time.sleep(self.ms / 1000.0)
        return x.mean(dim=(2, 3))
