"""Fake-quantized convolutions for QAT, and their INT8 export form, built on core torch ops only.

Why not torch.ao.quantization: it is deprecated in torch 2.14 (quantized dtypes are slated for removal), and the
default ONNX exporter does not turn its fake-quant modules into QDQ. Here training uses the core aten ops
``fake_quantize_per_tensor_affine`` / ``fake_quantize_per_channel_affine`` (straight-through gradients), and the
export form stores INT8 weights and INT32 biases and dequantizes them with a ``torch.library`` op; both are
translated to ONNX QuantizeLinear / DequantizeLinear by ``qdq_translations``. The exported graph is therefore the
fake-quant model itself: same tensors quantized, same scales, same rounding.

Every convolution is wrapped with its following BatchNorm folded in: weights are quantized *after* folding
(as ONNX Runtime runs them), with the running statistics; until BN is frozen they keep updating from the batch.
"""

from __future__ import annotations

from typing import Dict, Optional

import onnx
import torch
from onnxscript import opset18 as op
from torch import nn
from torch.nn import functional as F

from compressreid.quant.format import QuantFormat


class ActivationQuantizer(nn.Module):
    """Per-tensor INT8 fake quantization (asymmetric, or symmetric with zero point 0 when the format says so); the
    range comes from a min/max observer (EMA in training)."""

    def __init__(self, momentum: float = 0.01, fmt: QuantFormat = QuantFormat()):
        super().__init__()
        self.momentum = momentum
        self.qmin, self.qmax = fmt.activation_range
        self.symmetric = fmt.symmetric_activations
        self.observing = True  # False once observers are frozen
        self.calibrating = False  # observe in eval mode too (range initialisation on calibration batches)
        self.frozen_for_export = False  # set by freeze_for_export: same arithmetic through an exportable op
        self.register_buffer("min_val", torch.tensor(0.0))
        self.register_buffer("max_val", torch.tensor(0.0))
        self.register_buffer("initialized", torch.tensor(False))
        self.register_buffer("scale", torch.tensor(1.0))
        self.register_buffer("zero_point", torch.tensor(0, dtype=torch.int32))

    @torch.no_grad()
    def observe(self, x: torch.Tensor) -> None:
        low, high = x.min().float(), x.max().float()
        if self.calibrating or not bool(self.initialized):
            low = torch.minimum(low, self.min_val) if bool(self.initialized) else low
            high = torch.maximum(high, self.max_val) if bool(self.initialized) else high
        else:
            low = self.min_val + self.momentum * (low - self.min_val)
            high = self.max_val + self.momentum * (high - self.max_val)
        self.min_val.copy_(low)
        self.max_val.copy_(high)
        self.initialized.fill_(True)
        low, high = torch.clamp(low, max=0.0), torch.clamp(high, min=0.0)  # zero must be exactly representable
        if self.symmetric:  # zero point 0, the range +-max|x| (as ONNX Runtime's ActivationSymmetric computes it)
            scale = torch.clamp(torch.maximum(-low, high) / self.qmax, min=1e-8)
            self.scale.copy_(scale)
            self.zero_point.zero_()
            return
        scale = torch.clamp((high - low) / (self.qmax - self.qmin), min=1e-8)
        self.scale.copy_(scale)
        zero_point = torch.clamp(torch.round(self.qmin - low / scale), self.qmin, self.qmax)
        self.zero_point.copy_(zero_point.to(torch.int32))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.frozen_for_export:
            return quantize_dequantize(x, self.scale, self.zero_point, self.qmin, self.qmax)
        if self.observing and (self.training or self.calibrating):
            self.observe(x)
        return torch.fake_quantize_per_tensor_affine(x, self.scale, self.zero_point, self.qmin, self.qmax)


# int32 max - (min + 1), and the margin, as ONNX Runtime's quantizer counts them for the INT32 bias
INT32_BIAS_RANGE = float(2 ** 32 - 2)
BIAS_SCALE_MARGIN = 1.0001


def weight_scale(weight: torch.Tensor, bias: torch.Tensor, input_scale: torch.Tensor, qmax: int = 127) -> torch.Tensor:
    """Symmetric per-output-channel scale: max |w| over each filter / ``qmax`` (127, or 64 for 7-bit weights),
    raised where needed so that the INT32 bias (scale ``input_scale * weight scale``) cannot overflow.

    Why the raise: a 1x1 conv with tiny weights and a real bias (OSNet's channel gate fc2: weight scale 2.5e-4,
    bias / bias scale 2.8e10) would otherwise wrap around in INT32 in the shipped graph while the fake-quant
    model, which never casts, trains on the exact bias. ONNX Runtime's PTQ applies this same rule
    (``_adjust_weight_scale_for_int32_bias``); applying it in training too keeps QAT and its export identical.
    """
    scale = torch.clamp(weight.detach().abs().flatten(1).amax(dim=1) / qmax, min=1e-8)
    min_scale_for_int32_bias = (BIAS_SCALE_MARGIN * 2.0 * bias.detach().abs() / INT32_BIAS_RANGE
                                / torch.clamp(input_scale, min=1e-8))
    return torch.maximum(scale, min_scale_for_int32_bias)


def _round_ste(x: torch.Tensor) -> torch.Tensor:
    return x + (torch.round(x) - x).detach()


class QATConv2d(nn.Module):
    """A Conv2d (and the BatchNorm2d that follows it, folded in) with fake-quantized input, weight, bias, output, in
    the given format (weights in [-qmax, qmax] per output channel)."""

    def __init__(self, conv: nn.Conv2d, bn: Optional[nn.BatchNorm2d] = None, fmt: QuantFormat = QuantFormat()):
        super().__init__()
        self.conv, self.bn = conv, bn
        self.bn_frozen = bn is None
        self.weight_qmax = fmt.weight_qmax
        self.quantized_bias = fmt.quantized_bias  # int32 bias (QLinearConv); False: float (TensorRT)
        self.input_quant = ActivationQuantizer(fmt=fmt)
        self.output_quant = ActivationQuantizer(fmt=fmt)
        # True when the input is another QATConv2d's output: input_quant is then that conv's output_quant and the
        # tensor is already on its grid (see qat.share_chained_quantizers)
        self.input_prequantized = False

    def folded(self):
        """(weight, bias) with the BN folded in, from its running statistics."""
        w = self.conv.weight
        b = self.conv.bias if self.conv.bias is not None else torch.zeros(w.shape[0], device=w.device, dtype=w.dtype)
        if self.bn is None:
            return w, b
        inv_std = self.bn.weight / torch.sqrt(self.bn.running_var + self.bn.eps)
        return w * inv_std.reshape(-1, 1, 1, 1), self.bn.bias + (b - self.bn.running_mean) * inv_std

    @torch.no_grad()
    def _update_bn(self, x: torch.Tensor) -> None:
        y = self._conv(x, self.conv.weight, self.conv.bias)
        mean, var = y.mean(dim=(0, 2, 3)), y.var(dim=(0, 2, 3), unbiased=True)
        m = self.bn.momentum if self.bn.momentum is not None else 0.1
        self.bn.running_mean.mul_(1 - m).add_(m * mean)
        self.bn.running_var.mul_(1 - m).add_(m * var)
        self.bn.num_batches_tracked.add_(1)

    def _conv(self, x, weight, bias):
        c = self.conv
        return F.conv2d(x, weight, bias, c.stride, c.padding, c.dilation, c.groups)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.input_prequantized:
            x = self.input_quant(x)
        if self.training and not self.bn_frozen:
            self._update_bn(x)
        weight, bias = self.folded()
        w_scale = weight_scale(weight, bias, self.input_quant.scale, self.weight_qmax)
        weight = torch.fake_quantize_per_channel_affine(weight, w_scale, torch.zeros_like(w_scale, dtype=torch.int32),
                                                        0, -self.weight_qmax, self.weight_qmax)
        if self.quantized_bias:
            b_scale = self.input_quant.scale * w_scale  # INT32 bias, as QLinearConv takes it
            bias = _round_ste(bias / b_scale) * b_scale
        return self.output_quant(self._conv(x, weight, bias))


# ---- export form -------------------------------------------------------------------------------------------
# torch.export cannot trace aten's tensor-qparams fake quantization, so the frozen model calls these two ops; their
# eager code is the fake-quant arithmetic itself, and qdq_translations() maps them onto ONNX Q/DQ.

@torch.library.custom_op("compressreid::quantize_dequantize", mutates_args=())
def quantize_dequantize(x: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor, quant_min: int,
                        quant_max: int) -> torch.Tensor:
    """Per-tensor 8-bit quantize then dequantize (identical to the training-time fake quantization)."""
    return torch.fake_quantize_per_tensor_affine(x, scale, zero_point, quant_min, quant_max)


@quantize_dequantize.register_fake
def _(x: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor, quant_min: int, quant_max: int) -> torch.Tensor:
    return torch.empty_like(x)


@torch.library.custom_op("compressreid::dequantize_per_channel", mutates_args=())
def dequantize_per_channel(values: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """INT8 weights or INT32 biases times their per-output-channel scale (axis 0, zero point 0)."""
    shape = [-1] + [1] * (values.dim() - 1)
    return values.to(torch.float32) * scale.reshape(shape)


@dequantize_per_channel.register_fake
def _(values: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return torch.empty(values.shape, dtype=torch.float32, device=values.device)


class ExportConv2d(nn.Module):
    """A trained QATConv2d frozen to integers: what ships, and (run in PyTorch) exactly what the QAT model computes."""

    def __init__(self, qat: QATConv2d):
        super().__init__()
        with torch.no_grad():
            weight, bias = qat.folded()
            w_scale = weight_scale(weight, bias, qat.input_quant.scale, qat.weight_qmax)
            b_scale = qat.input_quant.scale * w_scale
            self.register_buffer("weight_int8", torch.clamp(torch.round(weight / w_scale.reshape(-1, 1, 1, 1)),
                                                            -qat.weight_qmax, qat.weight_qmax).to(torch.int8))
            self.register_buffer("weight_scale", w_scale.clone())
            self.quantized_bias = qat.quantized_bias
            if self.quantized_bias:
                self.register_buffer("bias_int32", torch.round(bias / b_scale).to(torch.int32))
                self.register_buffer("bias_scale", b_scale.clone())
            else:  # a float constant in the graph, as trained
                self.register_buffer("bias_float", bias.detach().clone())
        self.stride, self.padding, self.dilation, self.groups = (qat.conv.stride, qat.conv.padding,
                                                                 qat.conv.dilation, qat.conv.groups)
        self.input_quant, self.output_quant = qat.input_quant, qat.output_quant
        self.input_prequantized = qat.input_prequantized

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.input_prequantized:
            x = self.input_quant(x)
        weight = dequantize_per_channel(self.weight_int8, self.weight_scale)
        bias = (dequantize_per_channel(self.bias_int32, self.bias_scale) if self.quantized_bias else self.bias_float)
        return self.output_quant(F.conv2d(x, weight, bias, self.stride, self.padding, self.dilation, self.groups))


def _quantize_dequantize(x, scale, zero_point, quant_min: int, quant_max: int):
    # the zero point's type selects the quantized type in ONNX: uint8 for (0, 255), int8 for (-128, 127)
    zp = op.Cast(zero_point, to=onnx.TensorProto.UINT8 if quant_min == 0 else onnx.TensorProto.INT8)
    return op.DequantizeLinear(op.QuantizeLinear(x, scale, zp), scale, zp)


def _dequantize_per_channel(values, scale):
    return op.DequantizeLinear(values, scale, axis=0)


def qdq_translations() -> Dict[object, object]:
    """aten / compressreid ops -> ONNX QuantizeLinear / DequantizeLinear, for ``export_onnx``."""
    return {
        torch.ops.compressreid.quantize_dequantize.default: _quantize_dequantize,
        torch.ops.compressreid.dequantize_per_channel.default: _dequantize_per_channel,
    }
