"""Nodes of a QDQ file put back in float: the accuracy-aware fallback for a file this run cannot quantize again with
nodes left out (QAT's export: its weights were trained for the INT8 grid, there is no FP32 graph to re-quantize).

A node put back in float reads its weights and bias as float initializers (the file's dequantized values, which are
the weights QAT trained) and its activations before their quantizer (the float tensor, no rounding); its output
stays quantized where the next node reads it quantized. Q/DQ nodes nobody reads any more are removed.
"""

from __future__ import annotations

import os
from typing import Dict, List, Sequence

import numpy as np
import onnx
from onnx import helper, numpy_helper

from compressreid.quant.fallback import Quantizer
from compressreid.quant.ptq import FALLBACK_OPS, drop_unused_qdq


def _dequantized(dq: onnx.NodeProto, initializers: Dict[str, onnx.TensorProto]) -> np.ndarray:
    """What a DequantizeLinear of an initializer computes: (codes - zero point) * scale, per tensor or per axis."""
    codes = numpy_helper.to_array(initializers[dq.input[0]]).astype(np.float64)
    scale = numpy_helper.to_array(initializers[dq.input[1]]).astype(np.float64)
    zero = (numpy_helper.to_array(initializers[dq.input[2]]).astype(np.float64)
            if len(dq.input) > 2 and dq.input[2] else np.zeros_like(scale))
    if scale.ndim == 1 and scale.size > 1:  # per axis (ONNX default axis 1)
        axis = next((helper.get_attribute_value(a) for a in dq.attribute if a.name == "axis"), 1) % codes.ndim
        shape = [1] * codes.ndim
        shape[axis] = scale.size
        scale, zero = scale.reshape(shape), zero.reshape(shape)
    return ((codes - zero) * scale).astype(np.float32)


def reversible_nodes(model: onnx.ModelProto) -> List[str]:
    """The nodes the fallback may put back in float (FALLBACK_OPS: weighted layers and element-wise joins) that read
    a dequantized input, in graph order."""
    producers = {out: node for node in model.graph.node for out in node.output}
    return [node.name for node in model.graph.node if node.op_type in FALLBACK_OPS and node.name and any(
        producers.get(name) is not None and producers[name].op_type == "DequantizeLinear" for name in node.input)]


def revert_to_float(model: onnx.ModelProto, names: Sequence[str]) -> onnx.ModelProto:
    """A copy of ``model`` with the nodes ``names`` computing in float (module docstring).

    Raises:
        KeyError: a name that is no node of the model.
    """
    out = onnx.ModelProto()
    out.CopyFrom(model)
    graph = out.graph
    nodes = {node.name: node for node in graph.node}
    missing = [name for name in names if name not in nodes]
    if missing:
        raise KeyError(f"no node named {missing[0]!r} in the QDQ file")
    initializers = {t.name: t for t in graph.initializer}
    producers = {o: node for node in graph.node for o in node.output}
    for name in names:
        node = nodes[name]
        for index, tensor in enumerate(node.input):
            dq = producers.get(tensor)
            if dq is None or dq.op_type != "DequantizeLinear":
                continue
            if dq.input[0] in initializers:  # weights or bias: the values the file dequantizes, as float
                value = numpy_helper.from_array(_dequantized(dq, initializers), f"{name}_float_input_{index}")
                graph.initializer.append(value)
                node.input[index] = value.name
                continue
            q = producers.get(dq.input[0])
            if q is not None and q.op_type == "QuantizeLinear":  # an activation: the tensor before its quantizer
                node.input[index] = q.input[0]
    drop_unused_qdq(graph)
    return out


def qdq_reverter(path: str) -> Quantizer:
    """The fallback's quantizer for the QDQ file at ``path``: ``quantize(out_path, exclude)`` writes the file with
    the nodes ``exclude`` in float. Quantizing nodes alone is not possible (the sensitivity scan runs as
    "revert_alone": each node kept in float in the otherwise INT8 file)."""
    source = onnx.load(path)

    def quantize(out_path: str, exclude: Sequence[str] = (), only: Sequence[str] = ()) -> str:
        if only:
            raise ValueError("a QDQ file's nodes can only be put back in float (QUANT.FALLBACK.SCAN revert_alone)")
        onnx.save(revert_to_float(source, list(exclude)), out_path)
        return out_path
    return quantize
