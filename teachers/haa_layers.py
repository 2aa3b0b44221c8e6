"""HAA building blocks: the head-shoulder crop, the per-stripe head-shoulder attention and the adaptive ensemble.

See ``teachers/haa.py`` for how they fit together and which choices are the paper's and which are ours.
"""

from __future__ import annotations

from typing import Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from compressreid.errors import ConfigError


class HeadShoulderCrop(nn.Module):
    """Cut a fixed head-shoulder box out of the (normalised) image and resample it to the image's own size.

    The paper localises the head-shoulder region with a spatial transformer pre-trained on head-shoulder box
    annotations and frozen during ReID training, and resamples the box to the full input size (its head-shoulder
    trunk sees 384x128 crops). Our datasets carry no box annotations, and an STN trained only by the ReID loss is free
    to drift onto the clothes, which defeats the purpose; so the box is a fixed prior (MODEL.HAA.HS_BOX). Slicing +
    bilinear resize is the STN's sampling step for a scale/translation-only box, and exports to ONNX at any opset.

    Args:
        box: (x0, y0, x1, y1) as fractions of the image width/height, 0 <= x0 < x1 <= 1, 0 <= y0 < y1 <= 1.
    """

    def __init__(self, box: Sequence[float] = (0.0, 0.0, 1.0, 0.4)):
        super().__init__()
        if len(box) != 4:
            raise ConfigError(f"MODEL.HAA.HS_BOX must be [x0, y0, x1, y1], got {list(box)}")
        x0, y0, x1, y1 = (float(v) for v in box)
        if not (0.0 <= x0 < x1 <= 1.0 and 0.0 <= y0 < y1 <= 1.0):
            raise ConfigError(f"MODEL.HAA.HS_BOX {list(box)} must satisfy 0 <= x0 < x1 <= 1 and 0 <= y0 < y1 <= 1")
        self.box = (x0, y0, x1, y1)

    def pixel_box(self, height: int, width: int) -> Tuple[int, int, int, int]:
        """(top, bottom, left, right) pixel bounds, at least one pixel each way."""
        x0, y0, x1, y1 = self.box
        top, left = min(int(round(y0 * height)), height - 1), min(int(round(x0 * width)), width - 1)
        bottom = min(height, max(top + 1, int(round(y1 * height))))
        right = min(width, max(left + 1, int(round(x1 * width))))
        return top, bottom, left, right

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        height, width = x.shape[-2:]
        top, bottom, left, right = self.pixel_box(height, width)
        return F.interpolate(x[:, :, top:bottom, left:right], size=(height, width), mode="bilinear",
                             align_corners=False)


class StripeAttention(nn.Module):
    """Channel attention with a residual, then spatial attention, on one horizontal stripe.

    Paper (released code): c = sigmoid(MLP(pool(x))), x' = x + x * c, s = sigmoid(sum_channels(x')), out = x' * s.
    The channel sum of a post-ReLU map with hundreds of channels is large and positive, so that sigmoid saturates at
    1 and the spatial attention is a no-op; we learn the channel weighting instead (a 1x1 conv to one map,
    zero-initialised so it starts as a uniform 0.5 that the following BNNeck absorbs).
    """

    def __init__(self, channels: int, reduction: int = 2):
        super().__init__()
        if reduction < 1 or channels // reduction < 1:
            raise ConfigError(f"MODEL.HAA.ATTENTION_REDUCTION {reduction} must be in [1, {channels}]")
        hidden = channels // reduction
        self.channel = nn.Sequential(nn.Linear(channels, hidden, bias=False), nn.ReLU(inplace=True),
                                     nn.Linear(hidden, channels, bias=False))
        self.spatial = nn.Conv2d(channels, 1, kernel_size=1)
        nn.init.zeros_(self.spatial.weight)
        nn.init.zeros_(self.spatial.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = torch.sigmoid(self.channel(x.mean(dim=(2, 3))))[:, :, None, None]
        x = x + x * c  # residual: a closed gate keeps the trunk's signal instead of zeroing it
        return x * torch.sigmoid(self.spatial(x))


class HeadShoulderAttention(nn.Module):
    """Split the head-shoulder map into horizontal stripes, attend each with its own weights, and re-assemble.

    Re-assembling keeps one [B, C, h, w] output (a clean feature tap); the embedding heads split it again with the
    same ``tensor_split`` (uneven rows go to the top stripes).
    """

    def __init__(self, channels: int, num_stripes: int = 3, reduction: int = 2):
        super().__init__()
        if num_stripes < 1:
            raise ConfigError(f"MODEL.HAA.NUM_STRIPES must be >= 1, got {num_stripes}")
        self.num_stripes = num_stripes
        self.stripes = nn.ModuleList(StripeAttention(channels, reduction) for _ in range(num_stripes))

    def split(self, x: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        if x.shape[2] < self.num_stripes:
            raise ConfigError(f"MODEL.HAA.NUM_STRIPES {self.num_stripes} exceeds the {x.shape[2]} rows of the "
                              "head-shoulder feature map; use fewer stripes, LAST_STRIDE 1 or a larger input")
        return torch.tensor_split(x, self.num_stripes, dim=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([attend(part) for attend, part in zip(self.stripes, self.split(x))], dim=2)


class AdaptiveEnsemble(nn.Module):
    """Black-clothes classifier on the global embedding, mapped to the two ensemble weights.

    As in the paper's released code: black logits z = Linear(BN(global)) are supervised with the black-clothes
    label (EnsembleGateLoss), and the weights (w_global, w_head_shoulder) = softmax(M z + b) come from a learned
    2x2 map. We initialise M = I, b = 0 (the paper's map is a BN + Linear, randomly initialised) so that from the
    first step w_head_shoulder = P(black): the gate supervision alone moves the weights in the intended direction,
    and the ReID loss on the fused branch can still re-shape the map. We drop the paper's BN on the 2-d logits,
    whose batch statistics would shift every weight when a batch happens to hold mostly black-clothed people.
    """

    def __init__(self, in_dim: int):
        super().__init__()
        self.norm = nn.BatchNorm1d(in_dim)
        self.classifier = nn.Linear(in_dim, 2)
        self.mix = nn.Linear(2, 2)
        nn.init.normal_(self.classifier.weight, std=0.01)
        nn.init.zeros_(self.classifier.bias)
        with torch.no_grad():
            self.mix.weight.copy_(torch.eye(2))
            self.mix.bias.zero_()

    def forward(self, global_embedding: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """Returns (weights [B, 2] = (global, head-shoulder), black logits [B, 2] = (not black, black))."""
        logits = self.classifier(self.norm(global_embedding))
        return torch.softmax(self.mix(logits), dim=1), logits
