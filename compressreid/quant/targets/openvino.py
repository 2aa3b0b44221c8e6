"""The OpenVINO CPU target: the QDQ ONNX file read by OpenVINO's CPU plugin, judged in OpenVINO itself.

OpenVINO's oneDNN int8 convolutions take u8 inputs and, without VNNI, add u8 x s8 pairs in int16 just as ONNX
Runtime's do (its docs call it the "saturation (overflow) issue"); the weight halving oneDNN has for s8 inputs does
not apply to them. So this target uses the portable format, 7-bit weights, and is certified by the same bound.

OpenVINO does not run the Q/DQ graph node by node: its low-precision transformations re-fuse dequantization,
residual adds and requantization with their own rounding, so its embeddings differ from the file's Q/DQ semantics
by more than ONNX Runtime's (cosine mean down to 0.96 against ONNX Runtime's >= 0.99 in docs/results/int8.md), while
their cosine to FP32 over the whole test set was as high as ONNX Runtime's file of the same format or higher on
every PTQ and QAT model of the AVX2 and AMX tables there. It is held to that, measured on 64 query images: no
further from FP32 than the Q/DQ semantics (``parity_rules``), every integer layer of the file run in integers
(matched by name in OpenVINO's compiled runtime model), and the same cosine-min floor against a broken runtime.
For the same reason a QAT file's rules against its fake-quant model are checked on the file's Q/DQ semantics, not
on OpenVINO's re-fused arithmetic (measured: ResNet-18-IBN 1/4, AVX2: OpenVINO 0.20 mAP below the fake-quant model
and 0.34 above FP32, closer to FP32 than the semantics, which match the fake-quant model within 0.02).
"""

from __future__ import annotations

from typing import ClassVar, Dict, List, Optional

import onnx
from torch import nn

from compressreid.export.cpu import ARM64, X86_AVX2, X86_AVX512, X86_VNNI
from compressreid.quant.saturation import int8_weighted_nodes
from compressreid.quant.targets.base import QuantTarget
from compressreid.quant.targets.registry import register_target


@register_target
class OpenVinoCpu(QuantTarget):
    name: ClassVar[str] = "openvino"
    runtime: ClassVar[str] = "openvino"
    holds_on = (X86_AVX2, X86_AVX512, X86_VNNI, ARM64)
    portable: ClassVar[bool] = True
    executes_graph: ClassVar[bool] = False

    def check_available(self) -> None:
        from compressreid.export.openvino_model import require_openvino

        require_openvino()

    def runtime_model(self, path: str, threads: int = 0) -> Optional[nn.Module]:
        from compressreid.export.openvino_model import OpenVinoEmbedder

        return OpenVinoEmbedder(path, threads)

    def parity_rules(self) -> List[str]:
        return [f"runtime_fp32_gap <= {self.parity.max_fp32_gap}", "runtime_float_layers <= 0"]

    def runtime_metrics(self, runtime: nn.Module, path: str) -> Dict[str, float]:
        """How many of the file's integer layers OpenVINO runs in integers and in float, matched by name."""
        layers = {node.name for node, _ in int8_weighted_nodes(onnx.load(path))}
        int8 = len(layers & runtime.int8_layers())
        return {"runtime_int8_layers": int8, "runtime_float_layers": len(layers) - int8}

    def runtime_note(self) -> str:
        import openvino

        return f"OpenVINO {openvino.__version__.split('-')[0]} CPU plugin on this machine"

    def describe(self):
        import openvino

        return {**super().describe(), "runtime_version": openvino.__version__.split("-")[0]}
