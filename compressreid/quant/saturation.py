"""The accumulation bound of an INT8 QDQ file: for every layer that runs as an integer kernel, the largest sum
each CPU kind's accumulator can be asked to hold, read from the file's own int8 weights.

This is how a file is certified for CPU kinds the build machine is not: if no input (any u8 code 0..255, or s8
-128..127) can push a layer's partial sums past its accumulator, the kernels of that kind compute exactly what the
graph's Q/DQ semantics say (up to requantization rounding), whatever the data. The bound pairs *any* two weights of
an output channel, so it holds for every packing order a kernel may use (MLAS pairs adjacent input channels at one
kernel tap; im2col GEMMs pair adjacent K).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Dict, List, Optional, Tuple

import numpy as np
import onnx
from onnx import numpy_helper

# Largest code magnitudes: u8 activations on x86 (s8 ones are shifted to u8 there), s8 on ARM NEON.
U8_MAX = 255
S8_MAGNITUDE = 128
WEIGHTED_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")


@dataclass
class LayerBound:
    """The worst sums of one integer layer, over its output channels (see compressreid.export.cpu.CpuKind)."""

    layer: str
    u8s8_pair_sum_max: int  # x86 without VNNI: u8 code x s8 weight, two products in int16
    s8s8_pair_sum_max: int  # ARM NEON without dotprod: s8 x s8, two products in int16
    dot_sum_max: int  # VNNI / dot product: the whole dot product in int32

    def to_dict(self) -> Dict[str, object]:
        return asdict(self)


def _output_channel_rows(node: onnx.NodeProto, weight: np.ndarray) -> Optional[np.ndarray]:
    """The weights as [output channels, reduction] rows, or None for a layout this bound does not know."""
    w = weight.astype(np.int64)
    if node.op_type == "Conv":
        return w.reshape(w.shape[0], -1)
    if node.op_type == "ConvTranspose":  # [in, out/groups, kh, kw]: one output channel reads axis 0 and the taps
        return np.moveaxis(w, 1, 0).reshape(w.shape[1], -1)
    if w.ndim != 2:
        return None
    trans_b = next((a.i for a in node.attribute if a.name == "transB"), 0) if node.op_type == "Gemm" else 0
    return w if trans_b else w.T


def _top2(values: np.ndarray) -> np.ndarray:
    """Per row, the sum of its two largest entries (one entry when the row has one)."""
    k = min(2, values.shape[1])
    return np.sort(values, axis=1)[:, -k:].sum(axis=1)


def layer_bound(name: str, node: onnx.NodeProto, weight: np.ndarray) -> Optional[LayerBound]:
    rows = _output_channel_rows(node, weight)
    if rows is None or rows.size == 0:
        return None
    positive, negative = np.clip(rows, 0, None), np.clip(-rows, 0, None)
    u8_pairs = U8_MAX * np.maximum(_top2(positive), _top2(negative))
    s8_pairs = S8_MAGNITUDE * _top2(np.abs(rows))
    dots = U8_MAX * np.abs(rows).sum(axis=1)
    return LayerBound(name, int(u8_pairs.max()), int(s8_pairs.max()), int(dots.max()))


def int8_weighted_nodes(model: onnx.ModelProto) -> List[Tuple[onnx.NodeProto, onnx.NodeProto]]:
    """Every weighted node fed an int8 weight initializer and a dequantized activation (what runtimes fuse into
    integer kernels), in graph order, with its weight's DequantizeLinear; layers kept in float (fallback) and u8
    weights (U8U8 kernels widen to int16 first: exact) are not listed."""
    graph = model.graph
    producers = {out: node for node in graph.node for out in node.output}
    int8_initializers = {t.name for t in graph.initializer if t.data_type == onnx.TensorProto.INT8}
    found = []
    for node in graph.node:
        if node.op_type not in WEIGHTED_OPS or len(node.input) < 2:
            continue
        activation, weight = producers.get(node.input[0]), producers.get(node.input[1])
        if activation is None or activation.op_type != "DequantizeLinear":
            continue
        if weight is None or weight.op_type != "DequantizeLinear" or weight.input[0] not in int8_initializers:
            continue
        found.append((node, weight))
    return found


def integer_layers(model: onnx.ModelProto) -> List[LayerBound]:
    """Every integer layer (:func:`int8_weighted_nodes`) with its bound."""
    initializers = {t.name: t for t in model.graph.initializer}
    bounds = []
    for node, weight in int8_weighted_nodes(model):
        bound = layer_bound(node.name or node.output[0], node, numpy_helper.to_array(initializers[weight.input[0]]))
        if bound is not None:
            bounds.append(bound)
    return bounds


def accumulation_bounds(path: str) -> Dict[str, object]:
    """The file's worst sums per accumulator (metric name -> value) and its five worst layers for x86 pairs.

    Returns:
        ``u8s8_pair_sum_max``, ``s8s8_pair_sum_max``, ``dot_sum_max`` (0 when the file has no integer layer),
        ``integer_layers`` (count) and ``worst_layers``.
    """
    layers = integer_layers(onnx.load(path))
    worst = sorted(layers, key=lambda b: -b.u8s8_pair_sum_max)[:5]
    return {"u8s8_pair_sum_max": max((b.u8s8_pair_sum_max for b in layers), default=0),
            "s8s8_pair_sum_max": max((b.s8s8_pair_sum_max for b in layers), default=0),
            "dot_sum_max": max((b.dot_sum_max for b in layers), default=0),
            "integer_layers": len(layers), "worst_layers": [b.to_dict() for b in worst]}
