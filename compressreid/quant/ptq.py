"""Post-training static quantization with ONNX Runtime's tooling: QDQ, signed INT8, per-channel weights.

Pre-processing (symbolic shape inference, Conv+BN fusion and other graph optimisations) runs first, as ONNX
Runtime recommends, so weights are quantized after folding and layer names refer to the fused graph.
"""

from __future__ import annotations

import logging
import os
import tempfile
from typing import List, Sequence

import onnx
import torch
from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
from onnxruntime.quantization.shape_inference import quant_pre_process

from compressreid.errors import ConfigError, ExportError
from compressreid.quant.calibration import BatchReader

logger = logging.getLogger(__name__)

CALIBRATION_METHODS = {
    "minmax": CalibrationMethod.MinMax,
    "percentile": CalibrationMethod.Percentile,
    "entropy": CalibrationMethod.Entropy,
}
# Operators whose weights carry the compute; they are the "layers" of sensitivity analysis and fallback.
WEIGHTED_OPS = ("Conv", "Gemm", "MatMul", "ConvTranspose")
# Operators quantized: the trunk's compute and the element-wise ops between convolutions, so ONNX Runtime can fuse
# whole chains into INT8 kernels. Left out on purpose: the embedding head (global pooling, BNNeck, reshapes),
# because quantizing the embedding itself costs retrieval accuracy (cosine 0.985 on R18) for no speed.
QUANTIZED_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul", "Add", "Mul", "Concat", "MaxPool", "AveragePool",
                 "Relu", "Clip", "HardSwish", "HardSigmoid", "Sigmoid", "Resize")


ACTIVATION_TYPES = {"int8": QuantType.QInt8, "uint8": QuantType.QUInt8}


def check_activation_type(name: str) -> QuantType:
    if name not in ACTIVATION_TYPES:
        raise ConfigError(f"QUANT.ACTIVATION_TYPE '{name}' is unknown; expected one of {sorted(ACTIVATION_TYPES)}")
    return ACTIVATION_TYPES[name]


def check_calibration_method(name: str) -> CalibrationMethod:
    if name not in CALIBRATION_METHODS:
        raise ConfigError(f"QUANT.CALIBRATION.METHOD '{name}' is unknown; expected one of {sorted(CALIBRATION_METHODS)}")
    return CALIBRATION_METHODS[name]


def preprocess(fp32_path: str, out_path: str) -> str:
    """ONNX Runtime's quantization pre-processing (shape inference + graph optimisation, incl. Conv+BN fusion)."""
    try:
        quant_pre_process(fp32_path, out_path, skip_symbolic_shape=False, skip_optimization=False)
    except Exception as exc:  # noqa: BLE001
        raise ExportError(f"quantization pre-processing of {fp32_path} failed: {str(exc).splitlines()[0]}") from exc
    return out_path


def weighted_layers(path: str) -> List[str]:
    """Names of the nodes quantization acts on (convolutions and matrix products), in graph order."""
    return [node.name for node in onnx.load(path).graph.node if node.op_type in WEIGHTED_OPS]


def quantize_ptq(prepared_path: str, out_path: str, batches: Sequence[torch.Tensor], method: str = "minmax",
                 per_channel: bool = True, percentile: float = 99.999, exclude: Sequence[str] = (),
                 only: Sequence[str] = (), activation_type: str = "uint8") -> str:
    """Quantize a pre-processed FP32 graph to QDQ INT8 (int8 per-channel weights), written atomically.

    Args:
        exclude: node names kept in FP32 (accuracy-aware fallback).
        only: quantize these nodes alone (per-layer sensitivity); empty = every supported node.
    """
    calibrate = check_calibration_method(method)
    activations = check_activation_type(activation_type)
    reader = BatchReader(onnx.load(prepared_path).graph.input[0].name, list(batches))
    directory = os.path.dirname(os.path.abspath(out_path))
    os.makedirs(directory, exist_ok=True)
    handle, tmp = tempfile.mkstemp(prefix=".ptq-", suffix=".onnx", dir=directory)
    os.close(handle)
    try:
        quantize_static(prepared_path, tmp, reader, quant_format=QuantFormat.QDQ, activation_type=activations,
                        weight_type=QuantType.QInt8, per_channel=per_channel, calibrate_method=calibrate,
                        nodes_to_exclude=list(exclude), nodes_to_quantize=list(only) or None,
                        op_types_to_quantize=list(QUANTIZED_OPS),
                        extra_options={"ActivationSymmetric": False, "WeightSymmetric": True,
                                       "CalibPercentile": percentile})
        os.replace(tmp, out_path)
    except ExportError:
        raise
    except Exception as exc:  # noqa: BLE001 - ORT raises plain exceptions for unsupported graphs
        raise ExportError(f"INT8 quantization of {prepared_path} failed: {str(exc).splitlines()[0]}") from exc
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
        for leftover in (tmp + ".data", os.path.join(directory, "augmented_model.onnx")):
            if os.path.exists(leftover):
                os.remove(leftover)
    return out_path
