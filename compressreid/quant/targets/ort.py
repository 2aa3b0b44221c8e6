"""ONNX Runtime CPU targets: the portable default (7-bit weights, provably free of int16 saturation on every CPU
kind) and the VNNI-tuned one (8-bit weights, exact only where products accumulate in int32)."""

from __future__ import annotations

from typing import ClassVar, Optional

from torch import nn

from compressreid.export.cpu import ARM64, X86_AVX2, X86_AVX512, X86_VNNI, this_kind
from compressreid.export.ort_model import OrtEmbedder
from compressreid.quant.targets.base import QuantTarget
from compressreid.quant.targets.registry import register_target

# ONNX Runtime's own switch to exact U8U8 kernels on x86 without VNNI: s8 weights outside [-64, 64] are shifted to
# u8 and multiplied with zero-extension (vpmaddwd), still fused into QLinearConv with the same requantization.
EXACT_X86_ACCUMULATION = {"session.x64quantprecision": "1"}


@register_target
class OrtPortable(QuantTarget):
    """The default: one file that computes its Q/DQ semantics on x86 with or without AVX-512/VNNI and on ARM64.

    Format chosen by measurement on the demo model (AVX2 CPU, ORT 1.32; /work/notes in the README's table): u8
    activations with 7-bit weights keep ORT's fast u8s8 kernels (R18-IBN 256x128 batch 32: 1.79x over FP32, as
    8-bit's 1.83x) and bring runtime-vs-Q/DQ cosine min from 0.977 to 0.996; U8U8 weights are exact too but
    0.91x FP32 at batch 32; s8s8 saturates like u8s8.
    """

    name: ClassVar[str] = "ort_portable"
    runtime: ClassVar[str] = "onnxruntime"
    holds_on = (X86_AVX2, X86_AVX512, X86_VNNI, ARM64)
    portable: ClassVar[bool] = True


@register_target
class OrtVnni(QuantTarget):
    """Today's format, 8-bit weights: exact where u8 x s8 products accumulate in int32 (VNNI, AMX, ARM dot
    product); on x86 without VNNI ORT's int16 pair sums saturate, so its card says it needs VNNI.

    On a machine without VNNI it cannot be measured in its own kernels; it is judged in ORT's fused kernels with
    exact U8U8 accumulation (the same fusion and requantization, the VNNI arithmetic).
    """

    name: ClassVar[str] = "ort_vnni"
    runtime: ClassVar[str] = "onnxruntime"
    holds_on = (X86_VNNI, ARM64)
    default_weight_bits: ClassVar[int] = 8

    def runtime_model(self, path: str, threads: int = 0) -> Optional[nn.Module]:
        if this_kind() in self.holds_on:
            return OrtEmbedder(path, threads)
        return OrtEmbedder(path, threads, config=EXACT_X86_ACCUMULATION)

    def measured_kind(self):
        return this_kind() if this_kind() in self.holds_on else X86_VNNI

    def runtime_note(self) -> str:
        if this_kind() in self.holds_on:
            return "onnxruntime on this machine"
        return ("onnxruntime's fused kernels with exact U8U8 accumulation (session.x64quantprecision), standing in "
                f"for VNNI on this {this_kind().name} machine")
