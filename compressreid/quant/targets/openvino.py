"""The OpenVINO CPU target: the QDQ ONNX file read by OpenVINO's CPU plugin, judged in OpenVINO itself.

OpenVINO's oneDNN int8 convolutions take u8 inputs and, without VNNI, add u8 x s8 pairs in int16 just as ONNX
Runtime's do (its docs call it the "saturation (overflow) issue"); the weight halving oneDNN has for s8 inputs does
not apply to them. So this target uses the portable format, 7-bit weights, and is certified by the same bound.

OpenVINO does not run the Q/DQ graph node by node: its low-precision transformations re-fuse dequantization,
residual adds and requantization with their own rounding, so its embeddings differ from the file's Q/DQ semantics
by more than ONNX Runtime's (cosine mean 0.986-0.996 against >= 0.999) and, on every model measured on both CPU
kinds, land as close to FP32 or closer. It is held to that: no further from FP32 than the Q/DQ semantics
(``parity_to = "fp32"``), with the same cosine-min floor against a broken runtime.
"""

from __future__ import annotations

from typing import ClassVar, Optional

from torch import nn

from compressreid.export.cpu import ARM64, X86_AVX2, X86_AVX512, X86_VNNI
from compressreid.quant.targets.base import QuantTarget
from compressreid.quant.targets.registry import register_target


@register_target
class OpenVinoCpu(QuantTarget):
    name: ClassVar[str] = "openvino"
    runtime: ClassVar[str] = "openvino"
    holds_on = (X86_AVX2, X86_AVX512, X86_VNNI, ARM64)
    portable: ClassVar[bool] = True
    parity_to: ClassVar[str] = "fp32"

    def check_available(self) -> None:
        from compressreid.export.openvino_model import require_openvino

        require_openvino()

    def runtime_model(self, path: str, threads: int = 0) -> Optional[nn.Module]:
        from compressreid.export.openvino_model import OpenVinoEmbedder

        return OpenVinoEmbedder(path, threads)

    def runtime_note(self) -> str:
        import openvino

        return f"OpenVINO {openvino.__version__.split('-')[0]} CPU plugin on this machine"

    def describe(self):
        import openvino

        return {**super().describe(), "runtime_version": openvino.__version__.split("-")[0]}
