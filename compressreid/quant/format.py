"""The INT8 format of a shipped file: activation type and symmetry, weight bits. PTQ and QAT produce exactly it.

Why weight bits are a choice: without VNNI, x86 kernels add pairs of u8 x s8 products in a saturating int16, and
two 8-bit weights times a u8 code reach 2 x 255 x 127 = 64770 > 32767. Weights in [-64, 64] ("7-bit", ONNX
Runtime's ``reduce_range``) cap a pair at 32640, so no input can saturate (see compressreid.quant.saturation).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Dict, Tuple

from compressreid.errors import ConfigError

ACTIVATION_TYPES = ("uint8", "int8")
WEIGHT_BITS = (7, 8)
# Where PTQ puts activation Q/DQ pairs. "fused": on the inputs and outputs of every operator ONNX Runtime's CPU
# kernels chain in integer form (Conv -> Add -> Relu -> MaxPool ...), so its sessions run whole chains in INT8;
# what follows the last weighted layer and a ReLU on its output (a last residual Add or h-swish, the pooling head)
# stays float (compressreid.quant.ptq.float_tail).
# "weighted_inputs": on the inputs of weighted layers (Conv, Gemm, MatMul) only, outputs and element-wise ops left
# to the runtime: TensorRT's recommended placement (its builder fuses a convolution's epilogue itself and reads a
# residual branch that is already quantized as another layer's input through the same Q/DQ). PTQ only: QAT
# (compressreid.quant.fake_quant) quantizes each convolution's input and output whatever this says.
PLACEMENTS = ("fused", "weighted_inputs")
QAT_PLACEMENT = "convolution inputs and outputs (QAT's fake quantization)"


@dataclass(frozen=True)
class QuantFormat:
    """How tensors are stored in the QDQ graph.

    Attributes:
        activations: "uint8" or "int8" codes, per tensor.
        symmetric_activations: zero point 0 (TensorRT requires it); else asymmetric, range from calibration.
        weight_bits: 8 = [-127, 127]; 7 = [-64, 64] (scale max|w| / 64), symmetric, zero point 0.
        per_channel: one weight scale per output channel (else per tensor).
        quantized_bias: biases stored as int32 (scale input scale x weight scale, as QLinearConv takes them); False
            keeps them float (TensorRT's parser takes int8 Q/DQ only).
        placement: where PTQ quantizes activations, one of PLACEMENTS (QAT has its own, see above).
    """

    activations: str = "uint8"
    symmetric_activations: bool = False
    weight_bits: int = 7
    per_channel: bool = True
    quantized_bias: bool = True
    placement: str = "fused"

    def __post_init__(self):
        if self.activations not in ACTIVATION_TYPES:
            raise ConfigError(f"activation type '{self.activations}' is unknown; expected one of {ACTIVATION_TYPES}")
        if self.weight_bits not in WEIGHT_BITS:
            raise ConfigError(f"weight bits {self.weight_bits} unsupported; expected one of {WEIGHT_BITS}")
        if self.placement not in PLACEMENTS:
            raise ConfigError(f"Q/DQ placement '{self.placement}' is unknown; expected one of {PLACEMENTS}")
        if self.symmetric_activations and self.activations == "uint8":
            raise ConfigError("symmetric activations need int8 codes (zero point 0 in the middle of the range)")

    @property
    def weight_qmax(self) -> int:
        """Largest weight code magnitude: 127, or 64 for 7-bit weights (ONNX Runtime's reduced range)."""
        return 127 if self.weight_bits == 8 else 64

    @property
    def activation_range(self) -> Tuple[int, int]:
        if self.activations == "uint8":
            return 0, 255
        return (-127, 127) if self.symmetric_activations else (-128, 127)

    def describe(self, method: str = "ptq") -> Dict[str, object]:
        """What the model card says about the format of a file made by ``method`` ("ptq" or "qat": QAT places its
        own Q/DQ pairs, see PLACEMENTS)."""
        qmax = self.weight_qmax
        placement = self.placement if method == "ptq" else QAT_PLACEMENT
        return {**asdict(self), "placement": placement,
                "weights": f"int8 in [-{qmax}, {qmax}] {'per-channel' if self.per_channel else 'per-tensor'} symmetric",
                "activations_range": list(self.activation_range)}
