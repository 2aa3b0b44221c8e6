"""Export parity: the ONNX graph must compute what the PyTorch model computes, on real batches."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Dict

import torch
from torch import nn
from torch.nn import functional as F

from compressreid.errors import ExportError


@dataclass(frozen=True)
class Parity:
    """Agreement of two embedding models on the same images."""

    max_abs: float
    max_rel: float  # max |a - b| / max |a|, comparable across embedding scales
    cosine_min: float
    cosine_mean: float
    images: int

    def to_dict(self) -> Dict[str, float]:
        return asdict(self)


@torch.no_grad()
def embedding_parity(reference: nn.Module, candidate: nn.Module, images: torch.Tensor) -> Parity:
    """Compare ``candidate`` with ``reference`` (both in eval mode) on ``images``."""
    return parity_of(reference.eval()(images).float(), candidate.eval()(images).float())


def parity_of(a: torch.Tensor, b: torch.Tensor) -> Parity:
    """Agreement of embeddings ``b`` with ``a`` of the same images (row by row).

    Raises:
        ExportError: their shapes differ.
    """
    if a.shape != b.shape:
        raise ExportError(f"embedding shapes differ: {tuple(a.shape)} vs {tuple(b.shape)}")
    diff = (a - b).abs().max().item()
    cosine = F.cosine_similarity(a, b, dim=1)
    return Parity(diff, diff / max(a.abs().max().item(), 1e-12), cosine.min().item(), cosine.mean().item(),
                  int(a.shape[0]))


def check_export_parity(reference: nn.Module, candidate: nn.Module, images: torch.Tensor,
                        max_rel: float = 1e-4, min_cosine: float = 0.99999) -> Parity:
    """``embedding_parity``, raising when the FP32 graph drifts from PyTorch.

    The bound is relative: deep FP32 graphs differ from eager PyTorch by ~1e-4 absolute after a few dozen
    layers of reordered float sums (measured on R50-IBN), which is not an export bug.

    Every bound is written as "within bound" and negated, so a NaN (an embedding that is NaN in either model),
    for which every comparison is False, fails instead of passing.

    Raises:
        ExportError: relative difference above ``max_rel``, a cosine below ``min_cosine``, or NaN in either.
    """
    parity = embedding_parity(reference, candidate, images)
    if math.isnan(parity.max_rel) or math.isnan(parity.cosine_min):
        raise ExportError(f"ONNX export does not match PyTorch: the comparison is NaN (max relative difference "
                          f"{parity.max_rel:.3g}, min cosine {parity.cosine_min:.6f}): an embedding holds NaN")
    if not (parity.max_rel <= max_rel and parity.cosine_min >= min_cosine):
        raise ExportError(f"ONNX export does not match PyTorch: max relative difference {parity.max_rel:.3g} "
                          f"(allowed {max_rel:g}), min cosine {parity.cosine_min:.6f} (needed {min_cosine})")
    return parity
