"""Data-aware refinement of a quantized QDQ graph, after ONNX Runtime's ``quantize_static``: its integer layers'
weights re-rounded by GPTQ (compressreid.quant.gptq) and their biases corrected, one layer at a time in graph order,
on the calibration images.

Both keep the file's format: the scales quantize_static chose, weight codes inside the format's range (so the
portable format's accumulation bound still holds), int32 biases on their own scale. Each layer is refined on the
inputs the already refined layers before it produce, the graph run node by node in ONNX Runtime (its Q/DQ
semantics), so it also absorbs what upstream quantization left.

Bias correction (Nagel et al., "Data-Free Quantization Through Weight Equalization and Bias Correction", ICCV 2019,
empirical form): the per-channel mean of a layer's output over the calibration images, FP32 graph minus quantized
graph, is added to its bias, so the quantization error no longer shifts the channel's mean.

Asymmetric calibration ("gptaq", GPTAQ: Li et al., ICML 2025): GPTQ fitted to the FP32 layer's output on the FP32
graph's own inputs instead of to the FP32 weights on the quantized graph's inputs, so each layer also absorbs what
upstream quantization left in its inputs (compressreid.quant.gptq.asymmetric_target).

Measured (docs/results/int8.md, "PTQ weight rounding"): GPTQ raises the embedding cosine to FP32 on every reference
model; bias correction on top of it did not help, so QUANT.BIAS_CORRECTION is off by default; nor did asymmetric
calibration (docs/results/int8.md, "Where MobileNetV3-small's PTQ loss comes from"), so "auto" stays GPTQ.
"""

from __future__ import annotations

import itertools
import logging
import time
from dataclasses import dataclass, replace
from typing import Collection, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import onnx
import onnx.shape_inference
import onnx.utils
import onnxruntime as ort
import torch
from onnx import helper, numpy_helper
from tqdm import tqdm

from compressreid.engine.progress import LoggedProgress
from compressreid.errors import ConfigError
from compressreid.quant.gptq import DEFAULT_DAMP, asymmetric_target, conv_input_moments, gptq_round
from compressreid.quant.saturation import int8_weighted_nodes

logger = logging.getLogger(__name__)

WEIGHT_ROUNDINGS = ("auto", "nearest", "gptq", "gptaq")
# "auto": GPTQ where the format gives up the 7th weight bit (the portable formats), nearest rounding on 8-bit weights.
# Measured (docs/results/int8.md, "PTQ weight rounding"): with 7-bit weights GPTQ lowered the mAP drop of ResNet-18 1/4
# from 0.49 to 0.08 (3 calibration samples); with 8-bit weights it raised the embedding cosine too but not the mAP
# (ResNet-18 1/4: drop 0.15 -> 0.13; ResNet-18-IBN 1/4: 0.32 -> 0.44, spread 0.21).
GPTQ_WEIGHT_BITS = (7,)


@dataclass(frozen=True)
class Refinement:
    """What refines a PTQ file after quantize_static.

    Attributes:
        weight_rounding: "nearest" (quantize_static's own), "gptq" (convolution weights; other layers keep
            nearest rounding), "gptaq" (GPTQ against the FP32 graph's own layer inputs: asymmetric calibration,
            compressreid.quant.gptq.asymmetric_target) or "auto" (GPTQ for 7-bit weight formats, nearest for
            8-bit: :meth:`for_format`; the quantize run also judges the nearest-rounded file when GPTQ's fails a
            gate).
        bias_correction: correct each integer layer's bias for the mean shift of its output.
        damp: GPTQ's dampening, a share of the mean diagonal of the input second moment.
        alpha: how much of the asymmetric correction "gptaq" applies (1: all of it).
    """

    weight_rounding: str = "auto"
    bias_correction: bool = False
    damp: float = DEFAULT_DAMP
    alpha: float = 1.0

    def __post_init__(self):
        if self.weight_rounding not in WEIGHT_ROUNDINGS:
            raise ConfigError(f"QUANT.WEIGHT_ROUNDING '{self.weight_rounding}' is unknown; expected one of "
                              f"{WEIGHT_ROUNDINGS}")

    def for_format(self, weight_bits: int) -> "Refinement":
        """The refinement a format with ``weight_bits`` gets ("auto" resolved)."""
        if self.weight_rounding != "auto":
            return self
        return replace(self, weight_rounding="gptq" if weight_bits in GPTQ_WEIGHT_BITS else "nearest")

    @property
    def active(self) -> bool:
        return self.weight_rounding != "nearest" or self.bias_correction

    def describe(self) -> Dict[str, object]:
        """What the model card says about it."""
        return {"weight_rounding": self.weight_rounding, "bias_correction": self.bias_correction,
                **({"gptq_weight_bits": list(GPTQ_WEIGHT_BITS)} if self.weight_rounding == "auto" else {}),
                **({"gptq_damp": self.damp} if self.weight_rounding != "nearest" else {}),
                **({"gptaq_alpha": self.alpha} if self.weight_rounding == "gptaq" else {})}


NEAREST = Refinement("nearest", False)


def refinement_of(cfg) -> Refinement:
    """The refinement a config asks for: QUANT.WEIGHT_ROUNDING and QUANT.BIAS_CORRECTION (PTQ only).

    Raises:
        ConfigError: an unknown rounding.
    """
    return Refinement(cfg.QUANT.WEIGHT_ROUNDING, bool(cfg.QUANT.BIAS_CORRECTION))


def _tensors(model: onnx.ModelProto, names: Sequence[str], batches: Sequence[torch.Tensor]
             ) -> Iterator[List[np.ndarray]]:
    """The float tensors ``names`` per calibration batch, from the part of the graph that computes them (ONNX
    Runtime runs every node of a graph whatever is fetched) run node by node: the graph's ONNX semantics."""
    part = onnx.utils.Extractor(onnx.shape_inference.infer_shapes(model)).extract_model([model.graph.input[0].name],
                                                                                      list(names))
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.log_severity_level = 3
    session = ort.InferenceSession(part.SerializeToString(), options, providers=["CPUExecutionProvider"])
    feed = session.get_inputs()[0].name
    for batch in batches:
        yield session.run(list(names), {feed: batch.numpy().astype(np.float32)})


def _channel_means(model: onnx.ModelProto, names: Sequence[str], batches: Sequence[torch.Tensor]
                   ) -> Dict[str, np.ndarray]:
    """Per tensor, the mean of each channel (axis 1) over every other axis and every batch, float64."""
    sums: Dict[str, np.ndarray] = {}
    counts = dict.fromkeys(names, 0)
    for outputs in _tensors(model, names, batches):
        for name, value in zip(names, outputs):
            axes = (0, *range(2, value.ndim))
            sums[name] = sums.get(name, 0.0) + value.sum(axis=axes, dtype=np.float64)
            counts[name] += value.size // value.shape[1]
    return {name: sums[name] / counts[name] for name in names}


def _attribute(node: onnx.NodeProto, name: str, default):
    for attribute in node.attribute:
        if attribute.name == name:
            return helper.get_attribute_value(attribute)
    return default


def _plain_conv2d(node: onnx.NodeProto, weight: np.ndarray) -> bool:
    """A 2-D Conv with explicit pads (what torch exports): the layers GPTQ re-rounds; others keep nearest rounding."""
    return node.op_type == "Conv" and weight.ndim == 4 and _attribute(node, "auto_pad", b"NOTSET") in (b"NOTSET",
                                                                                                        "NOTSET")


def _gptq_conv(model: onnx.ModelProto, initializers: Dict[str, onnx.TensorProto], node: onnx.NodeProto,
               weight_dq: onnx.NodeProto, fp32_weight: np.ndarray, batches: Sequence[torch.Tensor], qmax: int,
               damp: float, reference: Optional[Tuple[onnx.ModelProto, str]] = None, alpha: float = 1.0) -> None:
    """Replace a Conv's int8 weight codes by GPTQ's, on the inputs the graph gives it now (in place); with
    ``reference`` (the FP32 graph and the tensor it feeds this Conv), against the FP32 layer's output on the FP32
    graph's inputs (asymmetric calibration, ``alpha`` of it)."""
    codes = initializers[weight_dq.input[0]]
    current = numpy_helper.to_array(codes)
    scale = np.broadcast_to(numpy_helper.to_array(initializers[weight_dq.input[1]]).astype(np.float64),
                            (fp32_weight.shape[0],))
    kernel = list(_attribute(node, "kernel_shape", fp32_weight.shape[2:]))
    groups = int(_attribute(node, "group", 1))
    geometry = (kernel, _attribute(node, "strides", [1, 1]), _attribute(node, "pads", [0, 0, 0, 0]),
                _attribute(node, "dilations", [1, 1]), groups)
    gram, difference, count = 0.0, 0.0, 0
    references = _tensors(reference[0], [reference[1]], batches) if reference else itertools.repeat((None,))
    for (x,), (r,) in zip(_tensors(model, [node.input[0]], batches), references):
        # (X - X~) X~^T beside X~ X~^T: what the FP32 graph feeds the layer minus what this graph feeds it
        g, cross, n = conv_input_moments(torch.from_numpy(x), *geometry,
                                         error=None if r is None else torch.from_numpy(r - x))
        gram, count = gram + g, count + n
        if cross is not None:
            difference = difference + cross
    rows = torch.from_numpy(fp32_weight.reshape(groups, fp32_weight.shape[0] // groups, -1).astype(np.float64))
    if reference:
        rows = asymmetric_target(rows, gram / count, difference / count, alpha, damp)
    new = gptq_round(rows, gram / count, torch.from_numpy(scale.reshape(groups, -1).copy()), qmax, damp)
    codes.CopyFrom(numpy_helper.from_array(new.numpy().reshape(current.shape).astype(np.int8), codes.name))


def _correct_bias(initializers: Dict[str, onnx.TensorProto], producers: Dict[str, onnx.NodeProto],
                  node: onnx.NodeProto, delta: np.ndarray) -> bool:
    """Add ``delta`` (per output channel) to the node's bias, int32 codes on their scale or float (in place)."""
    if len(node.input) < 3 or not node.input[2]:
        return False
    source = producers.get(node.input[2])
    if source is not None and source.op_type == "DequantizeLinear" and source.input[0] in initializers:
        tensor = initializers[source.input[0]]
        scale = numpy_helper.to_array(initializers[source.input[1]]).astype(np.float64)
        values = numpy_helper.to_array(tensor).astype(np.float64) + delta / scale
        limits = np.iinfo(np.int32)
        tensor.CopyFrom(numpy_helper.from_array(np.clip(np.rint(values), limits.min, limits.max).astype(np.int32),
                                                tensor.name))
        return True
    if node.input[2] in initializers:
        tensor = initializers[node.input[2]]
        values = numpy_helper.to_array(tensor).astype(np.float64) + delta
        tensor.CopyFrom(numpy_helper.from_array(values.astype(np.float32), tensor.name))
        return True
    return False


def integer_weight_codes(model: onnx.ModelProto) -> Dict[str, np.ndarray]:
    """Each integer layer's int8 weight codes, by node name."""
    initializers = {t.name: t for t in model.graph.initializer}
    return {node.name: numpy_helper.to_array(initializers[weight.input[0]])
            for node, weight in int8_weighted_nodes(model)}


def set_weight_codes(model: onnx.ModelProto, codes: Dict[str, np.ndarray]) -> List[str]:
    """Give the integer layers named in ``codes`` those int8 weight codes (same scales: the codes of another
    quantization of the same graph and format); returns the layers changed. Modifies ``model`` in place."""
    initializers = {t.name: t for t in model.graph.initializer}
    changed = []
    for node, weight in int8_weighted_nodes(model):
        tensor = initializers[weight.input[0]]
        if node.name in codes and tuple(codes[node.name].shape) == tuple(tensor.dims):
            tensor.CopyFrom(numpy_helper.from_array(codes[node.name].astype(np.int8), tensor.name))
            changed.append(node.name)
    return changed


def refine_qdq(model: onnx.ModelProto, fp32: onnx.ModelProto, batches: Sequence[torch.Tensor],
               refinement: Refinement, weight_qmax: int, fixed: Collection[str] = ()) -> List[str]:
    """Refine ``model`` (quantized from ``fp32``, the pre-processed graph: same node names) in place; returns the
    integer layers refined, in graph order.

    Args:
        batches: calibration images, in the graph's input convention.
        weight_qmax: the format's largest weight code (GPTQ's codes stay within +-weight_qmax).
        fixed: layers whose weight codes are already final (not re-rounded; their biases are still corrected).
    """
    if refinement.weight_rounding == "auto":
        raise ValueError("refine_qdq needs a resolved refinement: Refinement.for_format(weight_bits)")
    if not refinement.active:
        return []
    fp32_nodes = {n.name: n for n in fp32.graph.node if n.name}
    fp32_weights = {t.name: t for t in fp32.graph.initializer}
    layers = [(node, weight) for node, weight in int8_weighted_nodes(model) if node.name in fp32_nodes]
    references: Dict[str, np.ndarray] = {}
    if refinement.bias_correction and layers:  # the FP32 means, one pass (the Conv's own output: quantize_static
        # renames it to a ReLU it folded into the QuantizeLinear)
        outputs = [fp32_nodes[node.name].output[0] for node, _ in layers]
        means = _channel_means(fp32, outputs, batches)
        references = {node.name: means[out] for (node, _), out in zip(layers, outputs)}
    initializers = {t.name: t for t in model.graph.initializer}  # edited in place: the names stay valid
    producers = {out: n for n in model.graph.node for out in n.output}
    refined: List[str] = []
    start = time.perf_counter()
    steps = tqdm(layers, desc=f"PTQ refinement ({refinement.weight_rounding} rounding"
                 f"{', bias correction' if refinement.bias_correction else ''})", unit="layer", leave=False,
                 dynamic_ncols=True, disable=None)  # a bar with ETA on a terminal
    logged = LoggedProgress(logger, "PTQ refinement", len(layers), "integer layers")  # and in logs
    for node, weight in steps:
        if refinement.weight_rounding in ("gptq", "gptaq") and node.name not in fixed:
            fp32_node = fp32_nodes[node.name]
            fp32_weight = numpy_helper.to_array(fp32_weights[fp32_node.input[1]])
            if _plain_conv2d(node, fp32_weight):
                reference = (fp32, fp32_node.input[0]) if refinement.weight_rounding == "gptaq" else None
                _gptq_conv(model, initializers, node, weight, fp32_weight, batches, weight_qmax, refinement.damp,
                           reference, refinement.alpha)
        if refinement.bias_correction:
            got = _channel_means(model, [node.output[0]], batches)[node.output[0]]
            _correct_bias(initializers, producers, node, references[node.name] - got)
        refined.append(node.name)
        logged.step()
    logger.info("PTQ refinement: %d integer layers in %.1f s (%s)", len(refined), time.perf_counter() - start,
                refinement.describe())
    return refined
