"""What TensorRT's ONNX parser and its explicit-quantization builder accept, checked on a file without TensorRT.

From onnx-tensorrt's operator table (TensorRT 10.x, opset 9-20) and its Q/DQ importer: INT8 Q/DQ only (UINT8 is
refused), every zero point 0, per-channel scales only on weights (axis 0 of a Conv's KCRS weight), activations
per tensor; InstanceNormalization runs in FP32/FP16 only, so its input and output must not be quantized.
"""

from __future__ import annotations

from typing import Dict, List, Set

import numpy as np
import onnx
from onnx import numpy_helper

# The ONNX operators TensorRT 10's parser imports (onnx-tensorrt docs/operators.md); the ones these models use are
# the ones that matter, the rest keep the check honest for timm backbones.
SUPPORTED_OPS: Set[str] = {
    "Abs", "Acos", "Acosh", "Add", "And", "ArgMax", "ArgMin", "Asin", "Asinh", "Atan", "Atanh", "AveragePool",
    "BatchNormalization", "Cast", "Ceil", "Celu", "Clip", "Concat", "Constant", "ConstantOfShape", "Conv",
    "ConvTranspose", "Cos", "Cosh", "CumSum", "DepthToSpace", "DequantizeLinear", "Div", "Dropout", "Einsum", "Elu",
    "Equal", "Erf", "Exp", "Expand", "EyeLike", "Flatten", "Floor", "Gather", "GatherElements", "GatherND", "Gelu",
    "Gemm", "GlobalAveragePool", "GlobalLpPool", "GlobalMaxPool", "Greater", "GreaterOrEqual", "GridSample",
    "GroupNormalization", "HardSigmoid", "HardSwish", "Identity", "If", "InstanceNormalization", "IsInf", "IsNaN",
    "LayerNormalization", "LeakyRelu", "Less", "LessOrEqual", "Log", "LogSoftmax", "Loop", "LpNormalization",
    "LpPool", "LRN", "MatMul", "Max", "MaxPool", "Mean", "Min", "Mish", "Mod", "Mul", "Neg", "NonMaxSuppression",
    "NonZero", "Not", "OneHot", "Or", "Pad", "ParametricSoftplus", "Pow", "PRelu", "QuantizeLinear", "RandomNormal",
    "RandomNormalLike", "RandomUniform", "RandomUniformLike", "Range", "Reciprocal", "ReduceL1", "ReduceL2",
    "ReduceLogSum", "ReduceLogSumExp", "ReduceMax", "ReduceMean", "ReduceMin", "ReduceProd", "ReduceSum",
    "ReduceSumSquare", "Relu", "Reshape", "Resize", "ReverseSequence", "RoiAlign", "Round", "ScaledTanh", "Scan",
    "ScatterElements", "ScatterND", "Selu", "Shape", "Shrink", "Sigmoid", "Sign", "Sin", "Sinh", "Size", "Slice",
    "Softmax", "Softplus", "Softsign", "SpaceToDepth", "Split", "Sqrt", "Squeeze", "Sub", "Sum", "Tan", "Tanh",
    "ThresholdedRelu", "Tile", "TopK", "Transpose", "Trilu", "Unsqueeze", "Upsample", "Where", "Xor",
}
MAX_OPSET = 20
QDQ_OPS = ("QuantizeLinear", "DequantizeLinear")


def unsupported_ops(model: onnx.ModelProto) -> List[str]:
    """Operator types (default domain) TensorRT's parser cannot import, and any custom-domain operator."""
    found = {(n.domain or "", n.op_type) for n in model.graph.node}
    return sorted(f"{d}::{op}" if d not in ("", "ai.onnx") else op for d, op in found
                  if d not in ("", "ai.onnx") or op not in SUPPORTED_OPS)


def _initial(model: onnx.ModelProto) -> Dict[str, np.ndarray]:
    return {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}


def qdq_violations(model: onnx.ModelProto) -> Dict[str, List[str]]:
    """Q/DQ nodes TensorRT refuses: not int8 (a uint8 activation, an int32 bias) or a non-zero zero point, or
    per-axis scales on an activation."""
    values = _initial(model)
    wrong_zero, per_axis_activation = [], []
    for node in model.graph.node:
        if node.op_type not in QDQ_OPS:
            continue
        zero_point = values.get(node.input[2]) if len(node.input) > 2 else None
        stored = values.get(node.input[0]) if node.op_type == "DequantizeLinear" else None
        not_int8 = stored is not None and stored.dtype != np.int8
        if not_int8 or (zero_point is not None and (zero_point.dtype != np.int8 or zero_point.any())):
            wrong_zero.append(node.name or node.output[0])
        scale = values.get(node.input[1])
        weight = node.op_type == "DequantizeLinear" and node.input[0] in values
        if scale is not None and scale.size > 1 and not weight:
            per_axis_activation.append(node.name or node.output[0])
    return {"zero_points": wrong_zero, "per_axis_activations": per_axis_activation}


def quantized_instance_norms(model: onnx.ModelProto) -> List[str]:
    """InstanceNormalization nodes that read a dequantized tensor or feed a QuantizeLinear (TensorRT has no INT8
    instance norm)."""
    producers = {out: n for n in model.graph.node for out in n.output}
    consumers: Dict[str, List[onnx.NodeProto]] = {}
    for node in model.graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    found = []
    for node in model.graph.node:
        if node.op_type != "InstanceNormalization":
            continue
        reads_dq = getattr(producers.get(node.input[0]), "op_type", "") == "DequantizeLinear"
        feeds_q = any(c.op_type == "QuantizeLinear" for c in consumers.get(node.output[0], []))
        if reads_dq or feeds_q:
            found.append(node.name or node.output[0])
    return found


def opset(model: onnx.ModelProto) -> int:
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)


# The counts check_for_tensorrt reports (0 = the requirement holds): the TensorRT target's rules and card read them.
TRT_CHECKS = ("trt_unsupported_ops", "trt_qdq_not_symmetric_int8", "trt_per_axis_activation_scales",
              "trt_quantized_instance_norms", "trt_opset_over_max")


def check_for_tensorrt(path: str) -> Dict[str, object]:
    """Every structural requirement, counted (0 = holds) and named: ONNX checker, operators, opset, Q/DQ types and
    zero points, per-tensor activations, instance norms kept out of INT8.

    Raises:
        onnx.checker.ValidationError: the file is not a valid ONNX model.
    """
    onnx.checker.check_model(path, full_check=True)
    model = onnx.load(path)
    qdq = qdq_violations(model)
    found = {"unsupported_ops": unsupported_ops(model), "qdq_not_symmetric_int8": qdq["zero_points"],
             "per_axis_activation_scales": qdq["per_axis_activations"],
             "quantized_instance_norms": quantized_instance_norms(model)}
    counts: Dict[str, object] = {f"trt_{k}": len(v) for k, v in found.items()}
    counts["trt_opset_over_max"] = max(0, opset(model) - MAX_OPSET)
    counts["details"] = {k: v[:5] for k, v in found.items() if v}
    return counts
