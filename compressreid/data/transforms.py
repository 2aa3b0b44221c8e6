"""Train and test transforms from torchvision.transforms.v2.

Input convention (documented once, used everywhere): the model receives RGB float32 in 0-255,
shape [B, 3, H, W]; normalisation by MODEL.PIXEL_MEAN/STD happens inside the model.
"""

from __future__ import annotations

import torch
from torchvision.transforms import InterpolationMode
from torchvision.transforms import v2
from yacs.config import CfgNode


def _to_float_0_255() -> list:
    # scale=False keeps the 0-255 range: the model normalises, so exported graphs are self-contained.
    return [v2.ToImage(), v2.ToDtype(torch.float32, scale=False)]


def build_train_transform(cfg: CfgNode) -> v2.Compose:
    """Resize, flip, pad + crop, colour jitter, AutoAugment/AugMix, then random erasing (0-255 fill)."""
    inp = cfg.INPUT
    size = list(inp.SIZE_TRAIN)
    ops = [v2.Resize(size, interpolation=InterpolationMode.BICUBIC, antialias=True)]
    if inp.AUTOAUG.ENABLED and inp.AUTOAUG.PROB > 0:
        ops.append(v2.RandomApply([v2.AutoAugment(v2.AutoAugmentPolicy.IMAGENET)], p=inp.AUTOAUG.PROB))
    if inp.FLIP.ENABLED:
        ops.append(v2.RandomHorizontalFlip(p=inp.FLIP.PROB))
    if inp.PADDING.ENABLED:
        ops += [v2.Pad(inp.PADDING.SIZE, padding_mode=inp.PADDING.MODE), v2.RandomCrop(size)]
    if inp.CJ.ENABLED:
        jitter = v2.ColorJitter(inp.CJ.BRIGHTNESS, inp.CJ.CONTRAST, inp.CJ.SATURATION, inp.CJ.HUE)
        ops.append(v2.RandomApply([jitter], p=inp.CJ.PROB))
    if inp.AUGMIX.ENABLED and inp.AUGMIX.PROB > 0:
        ops.append(v2.RandomApply([v2.AugMix()], p=inp.AUGMIX.PROB))
    ops += _to_float_0_255()
    if inp.REA.ENABLED:
        ops.append(v2.RandomErasing(p=inp.REA.PROB, value=[float(v) for v in inp.REA.VALUE]))
    return v2.Compose(ops)


def build_test_transform(cfg: CfgNode) -> v2.Compose:
    """Resize to INPUT.SIZE_TEST, then RGB float 0-255."""
    size = list(cfg.INPUT.SIZE_TEST)
    return v2.Compose([v2.Resize(size, interpolation=InterpolationMode.BICUBIC, antialias=True), *_to_float_0_255()])
