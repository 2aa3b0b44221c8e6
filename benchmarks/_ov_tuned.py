"""Prototype: our quantize_static call with extra options aimed at OpenVINO's CPU plugin (benchmarks only).

Same calibration, same format (u8 activations, 7-bit per-channel weights), same QUANTIZED_OPS as quantize_ptq;
the ``VARIANTS`` below add quantize_static options one at a time so their effect on OpenVINO and ONNX Runtime speed
(and on accuracy) can be measured against our shipped graph and NNCF's.
"""

from __future__ import annotations

import os
import tempfile
from typing import Dict, Sequence

import onnx
import torch
from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

from compressreid.quant.format import QuantFormat as OurFormat
from compressreid.quant.ptq import (QUANTIZED_OPS, calibrate, check_calibration_method, feed_float_layers_float,
                                   placement_exclusions, preprocess)

# name -> what it changes (see extra_options below)
VARIANTS = {
    "sym_input": "the first convolution's input as symmetric int8 (zero point 0), as NNCF quantizes model inputs",
    "float_split": "no Q/DQ on convolution outputs that only feed a Split (IBN): the split and InstanceNorm read "
                   "float, as in NNCF's graph",
    "float_concat": "Concat reads float inputs (no Q/DQ on each input of its own scale); its output keeps its Q",
    "no_concat_op": "Concat left out of the quantized op types (QUANTIZED_OPS without it)",
}
DEFAULT_VARIANT = ("no_concat_op",)


def parse_variant(text: str) -> tuple:
    """``"float_split+float_concat"`` -> ("float_split", "float_concat"), checked against VARIANTS."""
    variant = tuple(v for v in text.split("+") if v)
    unknown = set(variant) - set(VARIANTS)
    if unknown or not variant:
        raise ValueError(f"unknown variant {text!r}; expected '+'-joined names of {sorted(VARIANTS)}")
    return variant


def first_conv_input(model: onnx.ModelProto) -> str:
    """The activation tensor the first Conv reads (the normalised image for our exported models)."""
    return next(node.input[0] for node in model.graph.node if node.op_type == "Conv")


def op_types(variant: Sequence[str]) -> list:
    """QUANTIZED_OPS, without Concat for ``no_concat_op``."""
    return [op for op in QUANTIZED_OPS if not (op == "Concat" and "no_concat_op" in variant)]


def extra_options(prepared: onnx.ModelProto, fmt: OurFormat, variant: Sequence[str]) -> Dict[str, object]:
    """quantize_ptq's extra_options, plus a symmetric int8 override of the first input for ``sym_input``."""
    options: Dict[str, object] = {"ActivationSymmetric": fmt.symmetric_activations, "WeightSymmetric": True}
    if "sym_input" in variant:
        options["TensorQuantOverrides"] = {first_conv_input(prepared): [{"quant_type": QuantType.QInt8,
                                                                         "symmetric": True}]}
    return options


def read_float(model: onnx.ModelProto, op_type: str, all_inputs: bool) -> int:
    """Let each ``op_type`` node that reads a Q->DQ pair (read by it alone) read the float tensor instead (its first
    input, or every input); returns how many inputs were rewired."""
    producers = {out: node for node in model.graph.node for out in node.output}
    readers: Dict[str, int] = {}
    for node in model.graph.node:
        for name in node.input:
            readers[name] = readers.get(name, 0) + 1
    rewired = 0
    for node in (n for n in model.graph.node if n.op_type == op_type):
        for i in range(len(node.input) if all_inputs else 1):
            dq = producers.get(node.input[i])
            q = producers.get(dq.input[0]) if dq is not None and dq.op_type == "DequantizeLinear" else None
            if q is not None and q.op_type == "QuantizeLinear" and readers.get(dq.output[0]) == 1:
                node.input[i] = q.input[0]
                rewired += 1
    if rewired:
        from compressreid.quant.ptq import drop_unused_qdq  # exactly the clean-up needed here

        drop_unused_qdq(model.graph)
    return rewired


def quantize_ov_tuned(fp32_path: str, out_path: str, batches: Sequence[torch.Tensor], fmt: OurFormat,
                      variant: Sequence[str] = DEFAULT_VARIANT, method: str = "minmax") -> str:
    """Our PTQ (pre-processing, MinMax calibration cache, quantize_static in ``fmt``) plus ``variant``'s options."""
    parse_variant("+".join(variant))
    with tempfile.TemporaryDirectory(prefix="bench-ov-") as tmp:
        prepared = preprocess(fp32_path, os.path.join(tmp, "prepared.onnx"))
        cache = calibrate(prepared, list(batches), os.path.join(tmp, "ranges.json"), method)  # as quantize_ptq
        activations = QuantType.QUInt8 if fmt.activations == "uint8" else QuantType.QInt8
        graph = onnx.load(prepared)
        quantize_static(prepared, out_path, None, quant_format=QuantFormat.QDQ, activation_type=activations,
                        weight_type=QuantType.QInt8, per_channel=fmt.per_channel, reduce_range=fmt.weight_bits == 7,
                        calibrate_method=check_calibration_method(method), op_types_to_quantize=op_types(variant),
                        nodes_to_exclude=placement_exclusions(graph, fmt),
                        extra_options=extra_options(graph, fmt, variant), calibration_cache_path=cache)
        model = onnx.load(out_path)
        changed = bool(feed_float_layers_float(model, prepared))
        if "float_split" in variant:
            changed = read_float(model, "Split", all_inputs=False) > 0 or changed
        if "float_concat" in variant:
            changed = read_float(model, "Concat", all_inputs=True) > 0 or changed
        if changed:
            onnx.save(model, out_path)
    return out_path
