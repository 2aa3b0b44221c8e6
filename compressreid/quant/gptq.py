"""GPTQ rounding of one layer's weights onto a fixed integer grid, and the input statistics it needs.

Rounding every weight to its nearest code ignores that what matters is the layer's *output*: the error one rounding
leaves can be absorbed by the weights not yet rounded, in proportion to how the layer's inputs correlate. GPTQ
(Frantar et al., "GPTQ: Accurate Post-Training Quantization for Generative Pre-trained Transformers", ICLR 2023,
the Optimal Brain Quantizer update applied column by column) does that with the inverse of ``H = E[x x^T]`` over the
layer's calibration inputs. The libraries that implement it (AutoGPTQ, NNCF's weight compression) quantize MatMul
weights for weight-only LLM compression; none rounds the convolution weights of a static Q/DQ ONNX file onto a grid
it is given: the portable format's [-64, 64] codes, on the scales ONNX Runtime chose.
"""

from __future__ import annotations

from typing import Optional, Sequence, Tuple

import torch
from torch.nn import functional as F

# Dampening added to H's diagonal, as a share of its mean diagonal (GPTQ's default): keeps the inverse stable when
# input channels are nearly collinear or rarely active.
DEFAULT_DAMP = 0.01


def conv_input_moments(x: torch.Tensor, kernel: Sequence[int], strides: Sequence[int], pads: Sequence[int],
                       dilations: Sequence[int], groups: int, error: Optional[torch.Tensor] = None
                       ) -> Tuple[torch.Tensor, Optional[torch.Tensor], int]:
    """Per group, the sum of ``c c^T`` over every receptive-field column ``c`` of a 2-D convolution's input ``x``
    and, given ``error`` (same shape as ``x``), the sum of ``e c^T`` over its columns ``e``: the cross term of
    asymmetric calibration (:func:`asymmetric_target`, with ``error`` = what the FP32 graph feeds the convolution
    minus ``x``); ``x`` is unfolded once for both.

    Args:
        x: (N, C, H, W) float input, as the convolution reads it.
        kernel, strides, dilations: ONNX Conv attributes (2 values each); pads: ONNX ``[top, left, bottom, right]``.

    Returns:
        (groups, K, K) float64 sums with K = C / groups * kh * kw, in the weight's (channel, kh, kw) order (the cross
        sums None without ``error``), and the number of columns summed.
    """
    geometry = (kernel, strides, pads, dilations, groups)
    cols = _columns(x, *geometry)
    gram = torch.einsum("ngkl,ngml->gkm", cols, cols).double()
    cross = None if error is None else torch.einsum("ngkl,ngml->gkm", _columns(error, *geometry), cols).double()
    return gram, cross, cols.shape[0] * cols.shape[-1]


def _columns(x: torch.Tensor, kernel: Sequence[int], strides: Sequence[int], pads: Sequence[int],
             dilations: Sequence[int], groups: int) -> torch.Tensor:
    """(N, groups, K, L) receptive-field columns of a 2-D convolution's input."""
    (kh, kw), (sh, sw), (dh, dw) = kernel, strides, dilations
    x = F.pad(x.float(), (pads[1], pads[3], pads[0], pads[2]))
    # Tensor.unfold windows (a view) instead of F.unfold: im2col ran 6-100x slower on these shapes (2 cores)
    windows = x.unfold(2, dh * (kh - 1) + 1, sh).unfold(3, dw * (kw - 1) + 1, sw)[..., ::dh, ::dw]
    n, c, out_h, out_w = windows.shape[:4]
    return windows.permute(0, 1, 4, 5, 2, 3).reshape(n, groups, c // groups * kh * kw, out_h * out_w)


def asymmetric_target(weight: torch.Tensor, hessian: torch.Tensor, difference: torch.Tensor, alpha: float = 1.0,
                      damp: float = DEFAULT_DAMP) -> torch.Tensor:
    """The weights whose rounding by :func:`gptq_round` on ``hessian`` minimises ``|W X - Q X~|``: the quantized
    layer's output on its quantized-graph inputs ``X~`` against the FP32 layer's output on the FP32 graph's inputs
    ``X`` (asymmetric calibration: GPTAQ, Li et al., ICML 2025), so the layer also absorbs the error upstream
    quantization left in its inputs, not only its own rounding error.

    Since ``|W X - Q X~|^2 = |(T - Q) X~|^2 + const`` for ``T = W X X~^T (X~ X~^T)^-1``, GPTQ on ``T`` with the
    usual ``H = X~ X~^T`` solves it. Written ``T = W + alpha W D H_d^-1`` with ``D = (X - X~) X~^T`` (taken from
    the input error directly, not as a difference of two large sums) and ``H_d`` ``H`` dampened as
    :func:`gptq_round` dampens it; ``alpha`` 1 is the full correction, 0 plain GPTQ (``T = W`` whenever ``X = X~``).

    Args:
        weight: ([G,] rows, K) FP32 weights; hessian, difference: ([G,] K, K) second moments, same normalisation
            (e.g. :func:`conv_input_moments` of ``X~`` with ``X - X~`` as the error, each over
            its count).
    """
    single = weight.dim() == 2
    w = (weight[None] if single else weight).double()
    h = (hessian[None] if single else hessian).double()
    d = (difference[None] if single else difference).double()
    diagonal = torch.diagonal(h, dim1=-2, dim2=-1).clone()
    diagonal[diagonal == 0] = 1.0  # as gptq_round: inputs never active count as 1 in the dampening's mean
    h_d = h + damp * diagonal.mean(dim=-1)[:, None, None] * torch.eye(h.shape[-1], dtype=h.dtype)
    shift = torch.linalg.solve(h_d, (w @ d).transpose(-1, -2)).transpose(-1, -2)  # (W D) H_d^-1, H_d symmetric
    target = w + alpha * shift
    return target[0] if single else target


def gptq_round(weight: torch.Tensor, hessian: torch.Tensor, scale: torch.Tensor, qmax: int,
               damp: float = DEFAULT_DAMP, block: int = 128) -> torch.Tensor:
    """Integer codes in [-qmax, qmax] for ``weight`` on per-row ``scale``, minimising the output error on inputs
    with second moment ``hessian``; batched over a leading group axis (a grouped convolution's groups).

    Columns are taken in order of decreasing ``H`` diagonal (GPTQ's "act order"), in blocks whose updates are
    applied lazily. With a diagonal ``hessian`` there is nothing to compensate and the result is nearest rounding.

    Args:
        weight: ([G,] rows, K) float weights (one row per output channel).
        hessian: ([G,] K, K) symmetric positive semi-definite, e.g. the first sums of :func:`conv_input_moments`.
        scale: ([G,] rows) positive step of each row's grid.
    """
    single = weight.dim() == 2
    w = (weight[None] if single else weight).double().clone()
    h = (hessian[None] if single else hessian).double().clone()
    s = (scale[None] if single else scale).double()[..., None]
    columns = w.shape[-1]
    diagonal = torch.diagonal(h, dim1=-2, dim2=-1)
    dead = diagonal == 0  # inputs never active: their weights do not matter, quantize them to 0
    diagonal[dead] = 1.0
    w[dead[:, None, :].expand_as(w)] = 0.0
    order = torch.argsort(diagonal, dim=-1, descending=True)
    w = torch.gather(w, 2, order[:, None, :].expand_as(w))
    h = torch.gather(torch.gather(h, 1, order[:, :, None].expand_as(h)), 2, order[:, None, :].expand_as(h))
    h += damp * diagonal.mean(dim=-1)[:, None, None] * torch.eye(columns, dtype=h.dtype)
    # the upper Cholesky factor of H^-1 holds, row by row, how each rounding error spreads to the later columns
    # (torch.cholesky_inverse is ~20x slower than inv here, at K = 1152)
    h_inv = torch.linalg.cholesky(torch.linalg.inv(h), upper=True)
    codes = torch.zeros_like(w)
    for start in range(0, columns, block):
        end = min(start + block, columns)
        w_block, h_block = w[..., start:end].clone(), h_inv[:, start:end, start:end]
        errors = torch.zeros_like(w_block)
        for i in range(end - start):
            q = torch.clamp(torch.round(w_block[..., i] / s[..., 0]), -qmax, qmax)
            codes[..., start + i] = q
            err = (w_block[..., i] - q * s[..., 0]) / h_block[:, i, i][:, None]
            w_block[..., i:] -= err[..., None] * h_block[:, None, i, i:]
            errors[..., i] = err
        w[..., end:] -= errors @ h_inv[:, start:end, end:]
    codes = torch.gather(codes, 2, torch.argsort(order, dim=-1)[:, None, :].expand_as(codes))
    return codes[0] if single else codes
