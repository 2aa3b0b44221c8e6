"""Post-training static quantization with ONNX Runtime's tooling: QDQ, signed INT8, per-channel weights.

Pre-processing (symbolic shape inference, Conv+BN fusion and other graph optimisations) runs first, as ONNX
Runtime recommends, so weights are quantized after folding and layer names refer to the fused graph.
"""

from __future__ import annotations

import logging
import os
import tempfile
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import onnx
import torch
from onnxruntime.quantization import CalibrationMethod, QuantType, create_calibrator, quantize_static
from onnxruntime.quantization import QuantFormat as OrtQuantFormat
from onnxruntime.quantization.calibrate import TensorsData, save_tensors_data
from onnxruntime.quantization.shape_inference import quant_pre_process

from compressreid.engine.io import publish_file, temp_file_beside
from compressreid.errors import ConfigError, ExportError
from compressreid.quant.calibration import BatchReader
from compressreid.quant.format import QuantFormat
from compressreid.quant.refine import NEAREST, Refinement, refine_qdq, set_weight_codes

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
# because quantizing the embedding itself costs retrieval accuracy (cosine 0.985 on R18) for no speed; and Concat
# (in these models only IBN's InstanceNorm/BatchNorm halves): a quantized Concat input becomes element-wise nodes
# OpenVINO cannot fuse (0.92x its CPU time at batch 32 without, R50-IBN 1/4), ONNX Runtime runs the same either way.
# For the same reason as the head, nothing after the last weighted layer is quantized but a ReLU / Clip on its own
# output (float_tail).
QUANTIZED_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul", "Add", "Mul", "MaxPool", "AveragePool",
                 "Relu", "Clip", "HardSwish", "HardSigmoid", "Sigmoid", "Resize")
# What the accuracy-aware fallback may keep in float: the weighted layers, and the element-wise joins that own
# activation quantizers of their own (a residual Add quantizes both branches and the sum; a gate's Mul its product).
# Where the error sits in the activations, the joins are what helps: ResNet-18-IBN 1/4 at a 0.2 mAP bound, one
# residual Add in float passed (drop 0.12) where six convolutions in float did not (0.58; docs/results/int8.md,
# "Ours against NNCF"); that Add was the last one, which the float tail now leaves in float by default
# (docs/results/int8.md, "The float tail").
FALLBACK_OPS = WEIGHTED_OPS + ("Add", "Mul")


ACTIVATION_TYPES = {"int8": QuantType.QInt8, "uint8": QuantType.QUInt8}


def check_activation_type(name: str) -> QuantType:
    if name not in ACTIVATION_TYPES:
        raise ConfigError(f"QUANT.ACTIVATION_TYPE '{name}' is unknown; expected one of {sorted(ACTIVATION_TYPES)}")
    return ACTIVATION_TYPES[name]


def check_calibration_method(name: str) -> CalibrationMethod:
    if name not in CALIBRATION_METHODS:
        raise ConfigError(f"QUANT.CALIBRATION.METHOD '{name}' is unknown; expected one of {sorted(CALIBRATION_METHODS)}")
    return CALIBRATION_METHODS[name]


def placement_options(fmt: QuantFormat) -> Tuple[List[str], Dict[str, object]]:
    """quantize_static's operator list and extra options for the format's Q/DQ placement (format.PLACEMENTS).
    "weighted_inputs" quantizes the weighted layers and excludes their outputs, so a Q/DQ pair sits on each input
    of a convolution or matrix product and nowhere else."""
    if fmt.placement == "weighted_inputs":
        return list(WEIGHTED_OPS), {"OpTypesToExcludeOutputQuantization": list(WEIGHTED_OPS)}
    return list(QUANTIZED_OPS), {}


def preprocess(fp32_path: str, out_path: str) -> str:
    """ONNX Runtime's quantization pre-processing (shape inference + graph optimisation, incl. Conv+BN fusion), then
    every node given a name (``name_unnamed_nodes``) and every weighted layer weights of its own
    (``unshare_weights``)."""
    try:
        quant_pre_process(fp32_path, out_path, skip_symbolic_shape=False, skip_optimization=False)
    except Exception as exc:  # noqa: BLE001
        raise ExportError(f"quantization pre-processing of {fp32_path} failed: {str(exc).splitlines()[0]}") from exc
    model = onnx.load(out_path)
    named = name_unnamed_nodes(model)
    unshared = unshare_weights(model)
    if named or unshared:
        onnx.save(model, out_path)
    return out_path


def name_unnamed_nodes(model: onnx.ModelProto) -> bool:
    """Give every node without a name a unique one (``<op_type>_<index>``): quantize_static's node lists, the
    sensitivity scan and the fallback address nodes by name, and ONNX Runtime's optimizer leaves the nodes it makes
    unnamed (MobileNetV3's HardSwish becomes an unnamed HardSigmoid and Mul). Modifies ``model`` in place; returns
    whether any node was named."""
    taken = {node.name for node in model.graph.node}
    named = False
    for index, node in enumerate(model.graph.node):
        if node.name:
            continue
        name, suffix = f"{node.op_type}_{index}", 0
        while name in taken:
            suffix += 1
            name = f"{node.op_type}_{index}_{suffix}"
        node.name = name
        taken.add(name)
        named = True
    return named


def unshare_weights(model: onnx.ModelProto) -> List[str]:
    """Give each weighted layer that shares its weight initializer with an earlier one a copy of its own; returns the
    copies' names. Modifies ``model`` in place.

    Why: OSNet applies one channel gate to all of a block's streams, so after quantization one weight's
    DequantizeLinear feeds four convolutions, and ONNX Runtime's x86 U8U8 weight conversion
    (``session.x64quantprecision``, how the ort_vnni target is judged on CPUs without VNNI) fails to load such a file
    ("Attempt to replace the existing tensor"). One copy per layer also lets per-layer fallback and sensitivity act
    on one layer at a time. Same arithmetic; the shared weights here are tiny (OSNet x0.25's gates: 12 KB).
    """
    initializers = {t.name: t for t in model.graph.initializer}
    seen, copies = set(), []
    for node in model.graph.node:
        if node.op_type not in WEIGHTED_OPS or len(node.input) < 2:
            continue
        for i in range(1, len(node.input)):  # weight, and bias where the op has one
            name = node.input[i]
            if name not in initializers:
                continue
            if name in seen:
                copy = onnx.TensorProto()
                copy.CopyFrom(initializers[name])
                copy.name = f"{name}__{node.name or len(copies)}"
                model.graph.initializer.append(copy)
                node.input[i] = copy.name
                copies.append(copy.name)
            else:
                seen.add(name)
    return copies


def feed_float_layers_float(model: onnx.ModelProto, fp32_path: str) -> List[str]:
    """Rewire every layer left in FP32 (float weights) that reads a dequantized activation to read the float tensor
    before its QuantizeLinear instead; returns the rewired node names. Modifies ``model`` in place.

    Why: ONNX Runtime's ``WeightBiasQuantization`` graph optimisation (on at every level from "basic" up) finds a
    Conv/Gemm whose input comes from a DequantizeLinear but whose weights are float, and quantizes those weights to
    *per-tensor* INT8 so it can fuse the node. That silently undoes the accuracy-aware fallback, and per-tensor is
    far coarser than our per-channel weights (depthwise filters especially): measured on MobileNetV3-small, keeping
    6 layers "in FP32" gave the all-INT8 mAP, and the fused session's embeddings sat at cosine 0.90 from the
    graph's own Q/DQ semantics. A layer that reads float is left alone and really runs in FP32.

    ``fp32_path`` is the graph that was quantized: quantize_static drops a ReLU / Clip whose output it quantizes
    (the QuantizeLinear's clamp performs it), so where the float tensor before that QuantizeLinear is the
    activation's input, the activation is put back for the float reader. It is read only when a layer needs it
    (the all-INT8 model and the sensitivity scan's many quantizations mostly do not).
    """
    graph = model.graph
    producers = {out: node for node in graph.node for out in node.output}
    fp32_graph: Optional[onnx.GraphProto] = None
    fp32_producers: Dict[str, onnx.NodeProto] = {}
    float_weights = {t.name for t in graph.initializer if t.data_type == onnx.TensorProto.FLOAT}
    restored: Dict[str, str] = {}  # tensor -> the output of its re-inserted activation
    rewired = []
    for node in list(graph.node):
        if node.op_type not in WEIGHTED_OPS or len(node.input) < 2 or node.input[1] not in float_weights:
            continue
        dequantize = producers.get(node.input[0])
        quantize = producers.get(dequantize.input[0]) if dequantize is not None else None
        if dequantize is None or dequantize.op_type != "DequantizeLinear" or quantize is None \
                or quantize.op_type != "QuantizeLinear":
            continue
        source = quantize.input[0]
        if fp32_graph is None:
            fp32_graph = onnx.load(fp32_path).graph
            fp32_producers = {out: n for n in fp32_graph.node for out in n.output}
        original, current = fp32_producers.get(source), producers.get(source)
        if original is not None and original.op_type in REMOVABLE_ACTIVATIONS and \
                (current is None or current.op_type != original.op_type):
            if source not in restored:
                position = [n.name for n in graph.node].index(node.name)  # just before its first float reader
                restored[source] = _restore_activation(model, fp32_graph, original, source, position)
            source = restored[source]
        node.input[0] = source
        rewired.append(node.name)
    if rewired:
        drop_unused_qdq(graph)
    return rewired


# Activations quantize_static folds into the QuantizeLinear that follows them (its clamp does the same).
REMOVABLE_ACTIVATIONS = ("Relu", "Clip")


def _restore_activation(model: onnx.ModelProto, fp32_graph: onnx.GraphProto, original: onnx.NodeProto, source: str,
                        position: int) -> str:
    """Insert a copy of ``original`` (from the FP32 graph) on ``source`` at ``position``; returns its output name."""
    restored = onnx.NodeProto()
    restored.CopyFrom(original)
    restored.name = f"{original.name}_for_fp32_layers"
    output = f"{source}_fp32"
    del restored.input[:]
    restored.input.extend([source, *original.input[1:]])
    del restored.output[:]
    restored.output.append(output)
    present = {t.name for t in model.graph.initializer}
    for tensor in fp32_graph.initializer:  # Clip's bounds, when quantize_static dropped them with the Clip
        if tensor.name in original.input[1:] and tensor.name not in present:
            model.graph.initializer.append(tensor)
    model.graph.node.insert(position, restored)
    return output


def drop_unused_qdq(graph: onnx.GraphProto) -> None:
    """Remove QuantizeLinear / DequantizeLinear nodes whose outputs nothing reads any more, and their parameters."""
    while True:
        read = {name for node in graph.node for name in node.input} | {out.name for out in graph.output}
        unused = [node for node in graph.node if node.op_type in ("QuantizeLinear", "DequantizeLinear")
                  and not any(out in read for out in node.output)]
        if not unused:
            break
        for node in unused:
            graph.node.remove(node)
    for tensor in [t for t in graph.initializer if t.name not in read]:
        graph.initializer.remove(tensor)


def float_tail(model: onnx.ModelProto) -> List[str]:
    """Names of the nodes no weighted layer reads from, directly or through other nodes: what runs after the last
    convolution or matrix product (a last residual Add or h-swish, the pooling and embedding head), but for a ReLU
    or Clip on a layer's own output.

    The "fused" placement keeps them in float: Q/DQ pairs there feed no integer kernel, so they buy no speed, and
    each requantizes the features the embedding is pooled from. Measured (docs/results/int8.md, "The float tail";
    all-INT8 portable files, 3 calibration samples): embedding cosine to FP32 up on every model whose tail changed
    (ResNet-18-IBN 1/4 0.9834 -> 0.9893, its mAP drop 0.39 -> 0.09; MobileNetV3-small, whose h-swish after the
    last convolution was a HardSigmoid and a Mul with quantized inputs and outputs, 0.9684 -> 0.9726).
    """
    graph = model.graph
    producers = {out: node for node in graph.node for out in node.output if out}
    feeds_layer = set()  # ids of the nodes some weighted layer reads from, directly or not (any node order)
    stack = [node for node in graph.node if node.op_type in WEIGHTED_OPS]
    while stack:
        for name in stack.pop().input:
            source = producers.get(name) if name else None
            if source is not None and id(source) not in feeds_layer:
                feeds_layer.add(id(source))
                stack.append(source)

    def layer_activation(node: onnx.NodeProto) -> bool:
        # a ReLU / Clip on a layer's output is the layer's: quantize_static folds it into the layer's output
        # quantizer, so that range starts at 0; in float, the layer's output would be quantized before it, with
        # codes spent on the negative values it clips (OSNet x0.25: embedding cosine 0.9968 -> 0.9912)
        source = producers.get(node.input[0]) if node.input else None
        return node.op_type in REMOVABLE_ACTIVATIONS and source is not None and source.op_type in WEIGHTED_OPS

    return [n.name for n in graph.node
            if n.name and n.op_type not in WEIGHTED_OPS and id(n) not in feeds_layer and not layer_activation(n)]


def placement_exclusions(model: onnx.ModelProto, fmt: QuantFormat) -> List[str]:
    """The nodes ``fmt``'s placement leaves in float besides what its operator list skips: the "fused" placement's
    :func:`float_tail` ("weighted_inputs" quantizes nothing there anyway)."""
    return float_tail(model) if fmt.placement == "fused" else []


def weighted_layers(path: str) -> List[str]:
    """Names of the nodes quantization acts on (convolutions and matrix products), in graph order."""
    return [node.name for node in onnx.load(path).graph.node if node.op_type in WEIGHTED_OPS]


def fallback_candidates(path: str, fmt: QuantFormat) -> List[str]:
    """Names of the nodes the fallback may keep in float (FALLBACK_OPS) that ``fmt``'s placement quantizes, in graph
    order: every weighted layer, and the Add/Mul joins where the placement puts Q/DQ pairs around them."""
    op_types = set(placement_options(fmt)[0]) & set(FALLBACK_OPS)
    model = onnx.load(path)
    left_float = set(placement_exclusions(model, fmt))
    return [node.name for node in model.graph.node
            if node.op_type in op_types and node.name and node.name not in left_float]


# Levels the Entropy (KL) search simulates. ORT's entropy histogram spans [-t, t] symmetrically; after the range is
# clamped to what was observed (see _clamp_to_observed), an 8-bit asymmetric quantizer puts its 256 levels on
# [0, t] for the mostly post-ReLU activations here, which the symmetric search sees as 512 bins on [-t, t].
# Fewer bins simulate a coarser quantizer than the one shipped and clip far too much.
ENTROPY_QUANTIZED_BINS = 512


def _calibrator_options(method: str, percentile: float, histogram_bins: int) -> dict:
    """ORT calibrator settings. quantize_static builds its Entropy calibrator with 128 histogram bins and 128
    quantized bins: a single candidate threshold, the full range, so "entropy" silently equals MinMax (identical
    scales, measured on ResNet-18). quantize_static does not forward bin counts, hence our own calibrator call."""
    if method == "percentile":
        return {"num_bins": histogram_bins, "percentile": percentile}
    if method == "entropy":
        return {"num_bins": histogram_bins, "num_quantized_bins": ENTROPY_QUANTIZED_BINS}
    return {}


def check_histogram_bins(bins: int) -> int:
    least = 2 * ENTROPY_QUANTIZED_BINS
    if bins < least:
        raise ConfigError(f"QUANT.CALIBRATION.HISTOGRAM_BINS must be at least {least} "
                          f"(twice the entropy search's quantized bins), got {bins}")
    return bins


def _clamp_to_observed(ranges: TensorsData, histograms: dict) -> TensorsData:
    """ORT's entropy thresholds are symmetric (-t, t) even for a tensor that is never negative, which would spend
    half of an asymmetric quantizer's levels on values that never occur; its percentile method clamps to the
    observed min/max, and so does this."""
    for name, data in ranges.items():
        observed_min, observed_max = histograms[name][2], histograms[name][3]
        data.lowest = np.asarray(max(data.lowest, observed_min), dtype=data.lowest.dtype)
        data.highest = np.asarray(min(data.highest, observed_max), dtype=data.highest.dtype)
    return ranges


def calibrate(prepared_path: str, batches: Sequence[torch.Tensor], cache_path: str, method: str = "minmax",
              percentile: float = 99.999, histogram_bins: int = 2048) -> str:
    """Activation ranges of a pre-processed graph, computed by ONNX Runtime's calibrator and written as its
    calibration cache (JSON), which ``quantize_static`` then reads: every later quantization of the same graph
    (per-layer sensitivity, fallback) reuses the ranges instead of calibrating again."""
    calibrate_method = check_calibration_method(method)
    check_histogram_bins(histogram_bins)
    reader = BatchReader(onnx.load(prepared_path).graph.input[0].name, list(batches))
    with tempfile.TemporaryDirectory(prefix="calibrate-") as tmp:
        try:
            calibrator = create_calibrator(prepared_path, list(QUANTIZED_OPS), os.path.join(tmp, "augmented.onnx"),
                                           calibrate_method,
                                           extra_options=_calibrator_options(method, percentile, histogram_bins))
            calibrator.collect_data(reader)
            ranges = calibrator.compute_data()
            if method == "entropy":
                ranges = _clamp_to_observed(ranges, calibrator.collector.histogram_dict)
        except Exception as exc:  # noqa: BLE001 - ORT raises plain exceptions for graphs it cannot run
            raise ExportError(f"calibration of {prepared_path} failed: {str(exc).splitlines()[0]}") from exc
    save_tensors_data(ranges, cache_path)  # atomic (temp file + replace)
    return cache_path


def quantize_ptq(prepared_path: str, out_path: str, batches: Sequence[torch.Tensor], method: str = "minmax",
                 fmt: QuantFormat = QuantFormat(), percentile: float = 99.999, exclude: Sequence[str] = (),
                 only: Sequence[str] = (), histogram_bins: int = 2048, calibration_cache: str = "",
                 refinement: Refinement = NEAREST, weight_codes: Optional[Dict[str, np.ndarray]] = None) -> str:
    """Quantize a pre-processed FP32 graph to QDQ INT8 in format ``fmt``, written atomically.

    The format maps onto quantize_static's own options: activation type and ``ActivationSymmetric``, for 7-bit
    weights ``reduce_range`` (int8 weights in [-64, 64], scale max|w| / 64; activations unchanged), and its Q/DQ
    placement onto the operator list (:func:`placement_options`). Then
    ``refinement`` (compressreid.quant.refine: GPTQ weight rounding, bias correction) runs on ``batches``, keeping
    the format.

    Args:
        exclude: node names kept in FP32 (accuracy-aware fallback), besides :func:`placement_exclusions`.
        only: quantize these nodes alone (per-layer sensitivity, its default scan); empty = every supported node.
        calibration_cache: ranges from :func:`calibrate` for this graph and ``method``; empty = calibrate here.
        weight_codes: int8 weight codes by layer name, from an earlier quantization of this graph in this format
            (same scales), used for those layers instead of ``refinement``'s rounding (which then rounds the rest).
    """
    calibrate_method = check_calibration_method(method)
    activations = check_activation_type(fmt.activations)
    directory = os.path.dirname(os.path.abspath(out_path))
    tmp = temp_file_beside(out_path, prefix=".ptq-", suffix=".onnx")
    own_cache = "" if calibration_cache else tmp + ".calibration.json"
    try:
        cache = calibration_cache or calibrate(prepared_path, batches, own_cache, method, percentile, histogram_bins)
        op_types, placement = placement_options(fmt)
        exclude = [*exclude, *placement_exclusions(onnx.load(prepared_path), fmt)]
        quantize_static(prepared_path, tmp, None, quant_format=OrtQuantFormat.QDQ, activation_type=activations,
                        weight_type=QuantType.QInt8, per_channel=fmt.per_channel, reduce_range=fmt.weight_bits == 7,
                        calibrate_method=calibrate_method, nodes_to_exclude=list(exclude),
                        nodes_to_quantize=list(only) or None, op_types_to_quantize=op_types,
                        extra_options={"ActivationSymmetric": fmt.symmetric_activations, "WeightSymmetric": True,
                                       "QuantizeBias": fmt.quantized_bias, **placement},
                        calibration_cache_path=cache)
        quantized = onnx.load(tmp)
        rewired = feed_float_layers_float(quantized, prepared_path)
        fixed = set_weight_codes(quantized, weight_codes) if weight_codes else []
        refinement = refinement.for_format(fmt.weight_bits)
        refined = refinement.active and refine_qdq(quantized, onnx.load(prepared_path), batches, refinement,
                                                   fmt.weight_qmax, fixed)
        if rewired or fixed or refined:
            onnx.save(quantized, tmp)
        publish_file(tmp, out_path)  # the user's umask, not mkstemp's 0600
    except ExportError:
        raise
    except Exception as exc:  # noqa: BLE001 - ORT raises plain exceptions for unsupported graphs
        raise ExportError(f"INT8 quantization of {prepared_path} failed: {str(exc).splitlines()[0]}") from exc
    finally:
        for leftover in (tmp, tmp + ".data", own_cache, os.path.join(directory, "augmented_model.onnx")):
            if leftover and os.path.exists(leftover):
                os.remove(leftover)
    return out_path
