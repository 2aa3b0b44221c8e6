"""The TensorRT target: an explicit-quantization QDQ file TensorRT builds into an INT8 engine (symmetric int8
activations with zero point 0, per-channel 8-bit weights, InstanceNorm/IBN kept in float, dynamic batch), Q/DQ on
the inputs of weighted layers only, as TensorRT's guide recommends (its builder fuses each convolution's bias,
residual add and activation itself).

There is no TensorRT on a CPU machine: the file is checked structurally here (what TensorRT's ONNX parser and
INT8 builder accept) and judged on its own Q/DQ semantics (ONNX Runtime, node by node), which TensorRT's INT8
kernels reproduce up to requantization rounding (GPU integer units accumulate in int32).
``benchmarks/gpu_check.py`` builds and measures the engine where a GPU is available.
"""

from __future__ import annotations

import os
import tempfile
from typing import ClassVar, Dict, List, Optional

from torch import nn
from yacs.config import CfgNode

from compressreid.errors import ConfigError
from compressreid.export.tensorrt_check import SUPPORTED_OPS, TRT_CHECKS, check_for_tensorrt, unsupported_ops
from compressreid.quant.format import QuantFormat
from compressreid.quant.targets.base import QuantTarget
from compressreid.quant.targets.registry import register_target

# Batch sizes of the optimisation profile the card recommends (min, opt, max), as gpu_check.py builds it.
PROFILE_BATCHES = (1, 16, 32)


@register_target
class TensorRT(QuantTarget):
    name: ClassVar[str] = "tensorrt"
    runtime: ClassVar[str] = "tensorrt"
    holds_on = ()  # NVIDIA GPUs, not CPU kinds: certified by the structural checks, judged on Q/DQ semantics
    default_weight_bits: ClassVar[int] = 8

    @classmethod
    def format_from_config(cls, q: CfgNode) -> QuantFormat:
        """TensorRT's INT8 form: int8 activations with zero point 0 (QUANT.ACTIVATION_TYPE does not apply), biases in
        float (its parser takes no int32 Q/DQ; it folds the bias into the INT8 kernel itself), Q/DQ on weighted-layer
        inputs only: each extra requantization of a symmetric int8 tensor costs accuracy (docs/results/int8.md,
        "TensorRT: where the Q/DQ pairs go"), and TensorRT fuses without them."""
        return QuantFormat("int8", True, q.WEIGHT_BITS or cls.default_weight_bits, True, quantized_bias=False,
                           placement="weighted_inputs")

    def check_source(self, model_cfg: Optional[CfgNode], onnx_source: str) -> None:
        """An operator TensorRT's parser cannot import is refused before any export of the stage: the source is
        exported to a scratch file (or, for an ONNX source, read) and its operators checked."""
        import onnx

        if onnx_source:
            bad = unsupported_ops(onnx.load(onnx_source, load_external_data=False))
        else:
            from compressreid.export.onnx_export import export_onnx
            from compressreid.modeling import build_model

            with tempfile.TemporaryDirectory(prefix="trt-check-") as tmp:
                path = export_onnx(build_model(model_cfg).eval(), os.path.join(tmp, "model.onnx"),
                                   model_cfg.INPUT.SIZE_TEST)
                bad = unsupported_ops(onnx.load(path))
        if bad:
            raise ConfigError(f"target tensorrt: TensorRT's ONNX parser cannot import {', '.join(bad)} of this model; "
                              "use a backbone without it, or the ort_portable / openvino targets for CPUs")

    def runtime_model(self, path: str, threads: int = 0) -> Optional[nn.Module]:
        return None  # TensorRT needs an NVIDIA GPU: judged on the Q/DQ semantics (reference_model)

    def measured_kind(self):
        return None

    def file_metrics(self, path: str) -> Dict[str, float]:
        return {k: float(v) for k, v in check_for_tensorrt(path).items() if k != "details"}

    def rules(self, runtime_here: bool) -> List[str]:
        return [f"{check} <= 0" for check in TRT_CHECKS]

    def certification(self, bounds: Dict[str, object], measured) -> Dict[str, Dict[str, object]]:
        checks = {k: int(bounds.get(k, 0)) for k in TRT_CHECKS}
        holds = not any(checks.values())
        how = ("structural checks pass (parser operators, int8 zero points 0, per-tensor activations, InstanceNorm "
               "in float, opset); judged on the file's Q/DQ semantics; no engine built on this machine"
               if holds else f"structural checks fail: {', '.join(k for k, v in checks.items() if v)}")
        return {"NVIDIA GPU (TensorRT 10)": {"claimed": True, "holds": holds, "how": how}}

    def runtime_note(self) -> str:
        return "TensorRT (not on this machine)"

    def describe(self) -> Dict[str, object]:
        return {**super().describe(), "devices": "NVIDIA GPUs (TensorRT 10, explicit quantization)",
                "tensorrt_build": {"network": "strongly typed, no precision flags (the Q/DQ nodes set INT8)",
                                   "optimization_profile_batches": list(PROFILE_BATCHES),
                                   "parser_ops_checked": len(SUPPORTED_OPS)}}
