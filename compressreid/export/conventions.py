"""Input conventions of exported graphs: what a caller feeds (colour order, value range, normalisation), and the
few graph ops that turn it into the model's own input (RGB 0..255; the model normalises inside).

Why several: fast-reid's models take RGB 0..255 and normalise inside (our default), while trackers such as BoxMOT
feed an ImageNet-normalised RGB crop and OpenCV pipelines hold BGR. A file fed the wrong convention is normalised
twice (fast-reid #421/#465): its embeddings collapse. The shipped file takes exactly one convention, named on its
card, and is judged fed exactly that convention.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Dict, Optional, Tuple

import torch
from torch import nn

from compressreid.errors import ConfigError
from compressreid.registry import Registry

CONVENTIONS = Registry("input convention")

IMAGENET_MEAN = (0.485, 0.456, 0.406)  # RGB, on the 0..1 scale
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class InputConvention:
    """How the caller's float32 NCHW tensor relates to RGB 0..255.

    Attributes:
        name: the registered name (QUANT.INPUT_CONVENTION, model cards).
        bgr: channels are B, G, R.
        imagenet: values are (x / 255 - mean) / std with ImageNet's RGB mean and std (in the caller's channel order).
        words: the card's instruction, for a tracker integrator.
    """

    name: str
    bgr: bool
    imagenet: bool
    words: str

    def _stats(self) -> Tuple[torch.Tensor, torch.Tensor]:
        mean, std = torch.tensor(IMAGENET_MEAN), torch.tensor(IMAGENET_STD)
        if self.bgr:
            mean, std = mean.flip(0), std.flip(0)
        return mean.reshape(1, 3, 1, 1), std.reshape(1, 3, 1, 1)

    def from_rgb255(self, images: torch.Tensor) -> torch.Tensor:
        """RGB 0..255 images (the evaluator's) in this convention: what a caller of the file feeds it."""
        x = images.flip(1) if self.bgr else images
        if self.imagenet:
            mean, std = self._stats()
            x = (x / 255.0 - mean) / std
        return x

    def to_rgb255(self, x: torch.Tensor) -> torch.Tensor:
        """The inverse, as graph ops in front of the model (exported with it)."""
        if self.imagenet:
            mean, std = self._stats()
            x = (x * std + mean) * 255.0
        return x.flip(1) if self.bgr else x

    def card(self) -> Dict[str, object]:
        """The model card's input-contract fields."""
        contract: Dict[str, object] = {"input_convention": self.name, "color_order": "BGR" if self.bgr else "RGB"}
        if self.imagenet:
            mean, std = (list(IMAGENET_MEAN), list(IMAGENET_STD))
            if self.bgr:
                mean, std = mean[::-1], std[::-1]
            low = min((0.0 - m) / d for m, d in zip(mean, std))
            high = max((1.0 - m) / d for m, d in zip(mean, std))
            contract.update({"value_range": [round(low, 3), round(high, 3)], "mean": mean, "std": std,
                             "normalization": "by the caller: x / 255, minus mean, divided by std (per channel, in "
                                              "the channel order above); the graph does not normalise again"})
        else:
            contract.update({"value_range": [0, 255],
                             "normalization": "inside the graph (do not subtract mean or divide by std)"})
        contract["how_to_feed"] = self.words
        return contract


def _folded(model: nn.Module, convention: InputConvention) -> Optional[nn.Module]:
    """A copy of ``model`` whose own normaliser (``model.preprocess``, a PixelNormalizer) takes ImageNet-normalised
    RGB: (x - M) / S on x = (x'' s + m) 255 is (x'' - M') / S' with S' = S / (255 s), M' = (M - 255 m) / (255 s).
    One affine op, as in the rgb255 graph, so quantization finds nothing new in front of the first convolution
    (converting in extra Mul/Add nodes put four requantizations there: INT8 vs the rgb255 file 0.9953 -> 0.9989
    cosine on the demo model). None when the model has no such normaliser."""
    normalizer = getattr(model, "preprocess", None)
    if not (hasattr(normalizer, "pixel_mean") and hasattr(normalizer, "pixel_std")):
        return None
    folded = copy.deepcopy(model)
    mean = torch.tensor(IMAGENET_MEAN).reshape(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).reshape(1, 3, 1, 1)
    with torch.no_grad():
        old_mean, old_std = normalizer.pixel_mean.clone(), normalizer.pixel_std.clone()
        folded.preprocess.pixel_std.copy_(old_std / (255.0 * std))
        folded.preprocess.pixel_mean.copy_((old_mean - 255.0 * mean) / (255.0 * std))
    return folded


class ConventionAdapter(nn.Module):
    """A model taking ``convention``'s input. The channel order is reversed in the graph; ImageNet normalisation is
    folded into the model's own normaliser when it has one (else converted back to 0..255 by graph ops)."""

    def __init__(self, model: nn.Module, convention: InputConvention):
        super().__init__()
        self.convention = convention
        folded = _folded(model, convention) if convention.imagenet else None
        self.model, self.folded = (folded, True) if folded is not None else (model, False)
        self.train(model.training)  # a new module trains by default; exporting it would leave the model training

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.convention.bgr:
            x = x.flip(1)
        if self.convention.imagenet and not self.folded:
            mean, std = (torch.tensor(v, device=x.device).reshape(1, 3, 1, 1) for v in (IMAGENET_MEAN, IMAGENET_STD))
            x = (x * std + mean) * 255.0
        return self.model(x)


def _register(convention: InputConvention) -> None:
    CONVENTIONS.register(convention.name)(convention)


_register(InputConvention("rgb255", False, False,
                          "float32 NCHW, RGB, pixel values 0..255 (decoded image as is, channels reordered to RGB)"))
_register(InputConvention("rgb_imagenet", False, True,
                          "float32 NCHW, RGB, x / 255 then ImageNet mean/std (torchvision's and BoxMOT's input)"))
_register(InputConvention("bgr255", True, False,
                          "float32 NCHW, BGR (OpenCV's order), pixel values 0..255"))
_register(InputConvention("bgr_imagenet", True, True,
                          "float32 NCHW, BGR (OpenCV's order), x / 255 then ImageNet mean/std in B, G, R order"))

DEFAULT_CONVENTION = "rgb255"


def get_convention(name: str) -> InputConvention:
    """The registered convention ``name``.

    Raises:
        ConfigError: an unknown name (listing the valid ones).
    """
    if name not in CONVENTIONS:
        raise ConfigError(f"input convention '{name}' is unknown; valid: {', '.join(CONVENTIONS.names())}")
    return CONVENTIONS.get(name)
