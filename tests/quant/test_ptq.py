"""Post-training quantization (compressreid.quant.ptq) of a tiny exported ResNet-18: QDQ with INT8 or UINT8
activations, per-channel symmetric INT8 weights, the embedding head left in FP32, every calibration method, and the
exclude / only node sets."""

from __future__ import annotations

import os
from dataclasses import replace

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import numpy_helper

from compressreid.errors import ConfigError, ExportError
from compressreid.export.onnx_export import example_images, export_onnx
from compressreid.export.ort_model import ort_session
from compressreid.quant.format import QuantFormat
from compressreid.quant.ptq import (ACTIVATION_TYPES, CALIBRATION_METHODS, WEIGHTED_OPS, calibrate,
                                    fallback_candidates, float_tail, name_unnamed_nodes, preprocess, quantize_ptq,
                                    weighted_layers)
from compressreid.quant.saturation import accumulation_bounds

from tiny_models import tiny_resnet18

SIZE = (32, 16)
HEAD_OPS = ("ReduceMean", "GlobalAveragePool", "BatchNormalization", "Reshape", "Flatten")


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    """A tiny ResNet-18 (BNNeck head) exported once and pre-processed once: (fp32 path, prepared path, model)."""
    model = tiny_resnet18(SIZE)
    folder = tmp_path_factory.mktemp("ptq")
    fp32 = export_onnx(model, str(folder / "fp32.onnx"), SIZE)
    return fp32, preprocess(fp32, str(folder / "prepared.onnx")), model


@pytest.fixture(scope="module")
def batches():
    return [example_images(SIZE, 4, seed=s) for s in (10, 11)]


@pytest.fixture(scope="module")
def minmax(prepared, batches, tmp_path_factory):
    """S8S8 with 8-bit weights: signed INT8 activations and weights."""
    return quantize_ptq(prepared[1], str(tmp_path_factory.mktemp("minmax") / "int8.onnx"), batches, "minmax",
                        QuantFormat("int8", weight_bits=8))


@pytest.fixture(scope="module")
def entropy(prepared, batches, tmp_path_factory):
    """Quantized once with Entropy (KL) calibration, the slow one (ORT's threshold search over the histogram's bins:
    about 100 s on 2 cores): (its folder, the file)."""
    folder = tmp_path_factory.mktemp("entropy")
    return folder, quantize_ptq(prepared[1], str(folder / "entropy.onnx"), batches, "entropy", percentile=99.99)


class Graph:
    """Lookup tables of an ONNX graph."""

    def __init__(self, path: str):
        self.path = path
        self.graph = onnx.load(path).graph
        self.nodes = list(self.graph.node)
        self.init = {t.name: t for t in self.graph.initializer}
        self.producer = {out: node for node in self.nodes for out in node.output}
        self.consumers = {}
        for node in self.nodes:
            for name in node.input:
                self.consumers.setdefault(name, []).append(node)

    def of_type(self, op_type: str):
        return [n for n in self.nodes if n.op_type == op_type]

    def weight_dq(self, node):
        """The DequantizeLinear feeding ``node``'s weight, or None when the weight is a plain FP32 tensor."""
        source = self.producer.get(node.input[1])
        return source if source is not None and source.op_type == "DequantizeLinear" else None

    def attribute(self, node, name, default=None):
        found = [onnx.helper.get_attribute_value(a) for a in node.attribute if a.name == name]
        return found[0] if found else default


def run(path: str, batch: int = 3) -> np.ndarray:
    (out,) = ort_session(path, threads=1).run(None, {"images": example_images(SIZE, batch, seed=21).numpy()})
    return out


def test_weighted_layers_are_the_convolutions_in_graph_order(prepared):
    layers = weighted_layers(prepared[1])
    convs = [n.name for n in Graph(prepared[1]).of_type("Conv")]
    assert layers == convs and len(layers) == 20  # ResNet-18: stem + 16 block convs + 3 downsample convs
    assert len(set(layers)) == len(layers)


def test_prepared_graph_has_no_batch_norm_left_but_the_bnneck(prepared):
    g = Graph(prepared[1])
    (bnneck,) = g.of_type("BatchNormalization")  # the trunk's BNs are folded into their convolutions
    assert bnneck.input[1] == "heads.bottleneck.0.weight"


def test_quantized_graph_is_qdq_with_signed_int8_activations(minmax):
    g = Graph(minmax)
    quantize = g.of_type("QuantizeLinear")
    assert quantize and g.of_type("DequantizeLinear")
    for node in quantize:
        zero_point = g.init[node.input[2]]
        assert zero_point.data_type == onnx.TensorProto.INT8, node.name


@pytest.mark.parametrize("activation_type, onnx_type", [("int8", onnx.TensorProto.INT8),
                                                         ("uint8", onnx.TensorProto.UINT8)])
def test_activation_type_sets_the_activation_zero_points_and_weights_stay_int8(prepared, batches, tmp_path,
                                                                            activation_type, onnx_type):
    g = Graph(quantize_ptq(prepared[1], str(tmp_path / "q.onnx"), batches, fmt=QuantFormat(activation_type)))
    assert {g.init[n.input[2]].data_type for n in g.of_type("QuantizeLinear")} == {onnx_type}
    assert {g.init[g.weight_dq(c).input[0]].data_type for c in g.of_type("Conv")} == {onnx.TensorProto.INT8}
    assert run(g.path).shape == (3, prepared[2].embedding_dim)


def test_unknown_activation_type_is_a_config_error(prepared, batches, tmp_path):
    assert set(ACTIVATION_TYPES) == {"int8", "uint8"}
    with pytest.raises(ConfigError, match="activation type 'int4' is unknown"):
        quantize_ptq(prepared[1], str(tmp_path / "x.onnx"), batches, fmt=QuantFormat("int4"))
    assert not list(tmp_path.iterdir())


def test_every_conv_weight_is_per_channel_symmetric_int8(minmax, prepared):
    g = Graph(minmax)
    convs = g.of_type("Conv")
    assert sorted(c.name for c in convs) == sorted(weighted_layers(prepared[1]))  # node names survive
    for conv in convs:
        dq = g.weight_dq(conv)
        assert dq is not None, f"{conv.name} weight is not quantized"
        weight, scale, zero_point = (g.init[name] for name in dq.input)
        assert weight.data_type == zero_point.data_type == onnx.TensorProto.INT8
        assert g.attribute(dq, "axis", 1) == 0  # per output channel
        assert numpy_helper.to_array(scale).shape == (weight.dims[0],)
        assert not numpy_helper.to_array(zero_point).any()  # symmetric


def test_per_tensor_weights_when_asked(prepared, batches, tmp_path):
    g = Graph(quantize_ptq(prepared[1], str(tmp_path / "pt.onnx"), batches, "minmax", QuantFormat(per_channel=False)))
    for conv in g.of_type("Conv"):
        assert numpy_helper.to_array(g.init[g.weight_dq(conv).input[1]]).size == 1


def test_the_embedding_head_stays_fp32(minmax):
    g = Graph(minmax)
    head = [n for n in g.nodes if n.op_type in HEAD_OPS]
    assert {n.op_type for n in head} >= {"BatchNormalization"}
    for node in head:
        for out in node.output:
            assert not [c for c in g.consumers.get(out, []) if c.op_type == "QuantizeLinear"], node.name
    for bn in g.of_type("BatchNormalization"):
        assert g.producer[bn.input[0]].op_type != "DequantizeLinear"
    final = g.producer[g.graph.output[0].name]
    assert final.op_type not in ("DequantizeLinear", "QuantizeLinear")


@pytest.mark.parametrize("method", sorted(CALIBRATION_METHODS))
def test_each_calibration_method_gives_a_model_that_runs_close_to_fp32(prepared, batches, tmp_path, method, request):
    if method == "entropy":
        tmp_path, out_path = request.getfixturevalue("entropy")
    else:
        out_path = str(tmp_path / f"{method}.onnx")
        assert quantize_ptq(prepared[1], out_path, batches, method, percentile=99.99) == out_path
    assert os.listdir(tmp_path) == [f"{method}.onnx"]  # no temporary or augmented model left behind
    int8, fp32 = run(out_path), run(prepared[0])
    assert int8.shape == fp32.shape == (3, prepared[2].embedding_dim) and np.isfinite(int8).all()
    cosine = (int8 * fp32).sum(1) / np.linalg.norm(int8, axis=1) / np.linalg.norm(fp32, axis=1)
    # entropy (KL) calibration clips activation outliers by design, which embeddings feel (measured 0.89 here)
    assert cosine.min() > (0.85 if method == "entropy" else 0.9), cosine


def test_the_int8_file_gets_the_umask_mode(prepared, batches, tmp_path):
    """quantize_ptq writes into a mkstemp file (0600) and renames it: the file must end with the mode a plainly
    created one has, or a model quantized through the Python API is unreadable to the users it ships to."""
    previous = os.umask(0o022)
    try:
        path = quantize_ptq(prepared[1], str(tmp_path / "int8.onnx"), batches, only=weighted_layers(prepared[1])[:1])
    finally:
        os.umask(previous)
    assert os.stat(path).st_mode & 0o777 == 0o644
    assert os.listdir(tmp_path) == ["int8.onnx"]  # no temporary or calibration file left beside it


def test_excluded_conv_keeps_fp32_weights(prepared, batches, tmp_path):
    layers = weighted_layers(prepared[1])
    kept = layers[5]
    g = Graph(quantize_ptq(prepared[1], str(tmp_path / "ex.onnx"), batches, exclude=[kept]))
    by_name = {c.name: c for c in g.of_type("Conv")}
    assert g.weight_dq(by_name[kept]) is None
    assert g.init[by_name[kept].input[1]].data_type == onnx.TensorProto.FLOAT
    assert all(g.weight_dq(by_name[name]) is not None for name in layers if name != kept)


def test_fallback_candidates_are_the_weighted_layers_and_the_joins_the_placement_quantizes(prepared):
    nodes = {n.name: n.op_type for n in onnx.load(prepared[1]).graph.node}
    candidates = fallback_candidates(prepared[1], QuantFormat())
    assert [n for n in candidates if nodes[n] in WEIGHTED_OPS] == weighted_layers(prepared[1])
    # the residual sums but the last, which follows the last convolution and stays float (float_tail)
    assert sorted(nodes[n] for n in candidates if nodes[n] not in WEIGHTED_OPS) == ["Add"] * 7
    assert [n for n in nodes if n in candidates] == candidates  # in graph order
    # TensorRT's placement puts Q/DQ on weighted-layer inputs only: a float Add would change nothing
    assert fallback_candidates(prepared[1], QuantFormat(placement="weighted_inputs")) == weighted_layers(prepared[1])


def test_the_float_tail_is_every_node_after_the_last_convolution(prepared):
    model = onnx.load(prepared[1])
    nodes = list(model.graph.node)
    last_conv = max(i for i, n in enumerate(nodes) if n.op_type in WEIGHTED_OPS)
    tail = float_tail(model)
    assert tail == [n.name for n in nodes[last_conv + 1:]]
    assert {nodes[i].op_type for i in range(last_conv + 1, len(nodes))} >= {"Add", "BatchNormalization"}


def test_a_relu_on_the_last_layers_output_is_the_layers_not_the_tails():
    """quantize_static folds such a ReLU into the layer's output quantizer (range from 0); left in float, the layer's
    output would be quantized before it, codes spent on the negatives it clips."""
    x = onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 2, 4, 4])
    y = onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 2, 1, 1])
    w = numpy_helper.from_array(np.ones((2, 2, 1, 1), np.float32), "w")
    for activation, tail in (("Relu", ["pool"]), ("Sigmoid", ["act", "pool"])):
        nodes = [onnx.helper.make_node("Conv", ["x", "w"], ["c"], name="conv"),
                 onnx.helper.make_node(activation, ["c"], ["a"], name="act"),
                 onnx.helper.make_node("GlobalAveragePool", ["a"], ["y"], name="pool")]
        model = onnx.helper.make_model(onnx.helper.make_graph(nodes, "g", [x], [y], [w]))
        assert float_tail(model) == tail, activation
        del model.graph.node[:]  # listed out of order: the tail is the same
        model.graph.node.extend(nodes[::-1])
        assert sorted(float_tail(model)) == sorted(tail), activation


def test_the_fused_placement_runs_the_tail_in_float_and_every_layer_in_int8(prepared, batches, tmp_path):
    g = Graph(quantize_ptq(prepared[1], str(tmp_path / "int8.onnx"), batches))
    last_add = [n for n in g.of_type("Add")][-1]
    assert all(g.producer[i].op_type == "DequantizeLinear" for i in last_add.input)  # it reads the INT8 trunk ...
    assert downstream_ops(g, last_add.output) and not {"QuantizeLinear", "DequantizeLinear"} & downstream_ops(
        g, last_add.output)  # ... and nothing after it is quantized again
    assert all(g.weight_dq(c) is not None for c in g.of_type("Conv"))
    int8, fp32 = run(g.path), run(prepared[0])
    cosine = (int8 * fp32).sum(1) / np.linalg.norm(int8, axis=1) / np.linalg.norm(fp32, axis=1)
    assert cosine.min() > 0.9, cosine
    # TensorRT's placement quantizes weighted-layer inputs only, so nothing after its last convolution either
    trt = Graph(quantize_ptq(prepared[1], str(tmp_path / "trt.onnx"), batches,
                             fmt=QuantFormat(placement="weighted_inputs")))
    last_conv = trt.of_type("Conv")[-1]
    assert "Add" in downstream_ops(trt, last_conv.output)
    assert not {"QuantizeLinear", "DequantizeLinear"} & downstream_ops(trt, last_conv.output)


def downstream_ops(g: Graph, outputs) -> set:
    """Op types of every node reading ``outputs``, directly or through other nodes."""
    found, frontier = set(), list(outputs)
    while frontier:
        for reader in g.consumers.get(frontier.pop(), []):
            found.add(reader.op_type)
            frontier.extend(reader.output)
    return found


def test_preprocess_names_the_nodes_onnx_runtime_leaves_unnamed(tmp_path):
    """ONNX Runtime's optimizer turns MobileNetV3's HardSwish into an unnamed HardSigmoid and Mul; nodes are
    addressed by name (sensitivity, fallback), so an unnamed one would be measured as "" and never kept in float."""
    x = onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 4])
    y = onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 4])
    nodes = [onnx.helper.make_node("HardSigmoid", ["x"], ["s"]), onnx.helper.make_node("Mul", ["x", "s"], ["m"]),
             onnx.helper.make_node("Add", ["m", "x"], ["y"], name="Mul_1")]
    model = onnx.helper.make_model(onnx.helper.make_graph(nodes, "g", [x], [y]),
                                   opset_imports=[onnx.helper.make_opsetid("", 18)])
    assert name_unnamed_nodes(model) is True
    names = [n.name for n in model.graph.node]
    assert all(names) and len(set(names)) == 3 and names[2] == "Mul_1"  # unique, the named node untouched
    assert name_unnamed_nodes(model) is False
    onnx.save(model, str(tmp_path / "hs.onnx"))
    prepared = onnx.load(preprocess(str(tmp_path / "hs.onnx"), str(tmp_path / "prepared.onnx"))).graph
    assert all(n.name for n in prepared.node)


def test_an_excluded_add_sums_in_float_and_the_rest_stays_quantized(prepared, batches, tmp_path):
    add = next(n for n in fallback_candidates(prepared[1], QuantFormat()) if "add" in n.lower())
    all_int8 = Graph(quantize_ptq(prepared[1], str(tmp_path / "all.onnx"), batches))
    g = Graph(quantize_ptq(prepared[1], str(tmp_path / "ex.onnx"), batches, exclude=[add]))

    def requantized(graph):
        node = next(n for n in graph.nodes if n.name == add)
        return [c.op_type for c in graph.consumers.get(node.output[0], [])]

    assert requantized(all_int8) == ["QuantizeLinear"] and "QuantizeLinear" not in requantized(g)
    assert all(g.weight_dq(c) is not None for c in g.of_type("Conv"))  # every layer still INT8
    onnx.checker.check_model(onnx.load(g.path))
    assert run(g.path).shape == (3, prepared[2].embedding_dim)


def optimized_by_onnx_runtime(path: str, out_path: str) -> "Graph":
    """The graph ONNX Runtime actually runs after its basic-level rewrites (where WeightBiasQuantization acts)."""
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    options.optimized_model_filepath = out_path
    options.log_severity_level = 3
    ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    return Graph(out_path)


def test_onnx_runtime_runs_an_excluded_conv_in_fp32(prepared, batches, tmp_path):
    """An excluded conv fed by a DequantizeLinear would get per-tensor INT8 weights from ONNX Runtime itself
    (WeightBiasQuantization), undoing the fallback: it must read the float activation instead."""
    kept = weighted_layers(prepared[1])[5]
    path = quantize_ptq(prepared[1], str(tmp_path / "ex.onnx"), batches, exclude=[kept])
    g = Graph(path)
    conv = {c.name: c for c in g.of_type("Conv")}[kept]
    assert g.producer[conv.input[0]].op_type not in ("DequantizeLinear", "QuantizeLinear")
    assert not [n for n in g.nodes if n.op_type in ("QuantizeLinear", "DequantizeLinear")
                and not any(out in g.consumers for out in n.output)]  # no dangling Q/DQ left behind
    onnx.checker.check_model(onnx.load(path))
    optimized = optimized_by_onnx_runtime(path, str(tmp_path / "optimized.onnx"))
    ran = {c.name: c for c in optimized.of_type("Conv")}[kept]
    assert optimized.weight_dq(ran) is None and optimized.init[ran.input[1]].data_type == onnx.TensorProto.FLOAT


def test_layers_kept_in_fp32_compute_what_the_fp32_model_computes(prepared, batches, tmp_path):
    """With every conv excluded, what is left quantized (Add, MaxPool and their Q/DQ) barely moves the embedding. A
    float layer must also still see the ReLU that quantize_static folded into a QuantizeLinear's clamp."""
    path = quantize_ptq(prepared[1], str(tmp_path / "all_fp32.onnx"), batches, exclude=weighted_layers(prepared[1]))
    images = example_images(SIZE, 3, seed=21).numpy()
    fp32 = ort_session(prepared[0], threads=1).run(None, {"images": images})[0]
    int8 = run(path)
    cosine = (int8 * fp32).sum(1) / np.linalg.norm(int8, axis=1) / np.linalg.norm(fp32, axis=1)
    assert cosine.min() > 0.99, cosine


def test_only_quantizes_a_single_conv(prepared, batches, tmp_path):
    layers = weighted_layers(prepared[1])
    alone = layers[3]
    path = quantize_ptq(prepared[1], str(tmp_path / "only.onnx"), batches, only=[alone])
    g = Graph(path)
    assert [c.name for c in g.of_type("Conv") if g.weight_dq(c) is not None] == [alone]
    assert not g.of_type("Add") or all(g.producer.get(a.input[0]) is None or
                                       g.producer[a.input[0]].op_type != "DequantizeLinear"
                                       for a in g.of_type("Add"))
    assert run(path).shape == (3, prepared[2].embedding_dim)


def test_unknown_calibration_method_is_a_config_error(prepared, batches, tmp_path):
    with pytest.raises(ConfigError, match="QUANT.CALIBRATION.METHOD 'kl' is unknown; expected one of"):
        quantize_ptq(prepared[1], str(tmp_path / "x.onnx"), batches, "kl")
    assert not list(tmp_path.iterdir())


def test_preprocess_of_a_broken_file_is_an_export_error(tmp_path):
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"not a model")
    with pytest.raises(ExportError, match="quantization pre-processing of .*broken.onnx failed"):
        preprocess(str(broken), str(tmp_path / "prepared.onnx"))


def activation_scales(path: str) -> np.ndarray:
    g = onnx.load(path).graph
    init = {i.name: onnx.numpy_helper.to_array(i) for i in g.initializer}
    return np.array([float(init[n.input[1]]) for n in g.node if n.op_type == "QuantizeLinear"])


def test_entropy_calibration_clips_ranges_that_minmax_keeps(prepared, batches, tmp_path, entropy):
    # ORT's quantize_static default (128 histogram bins) makes Entropy identical to MinMax; ours must not be
    minmax = activation_scales(quantize_ptq(prepared[1], str(tmp_path / "mm.onnx"), batches, "minmax"))
    entropy = activation_scales(entropy[1])
    assert minmax.shape == entropy.shape
    assert (entropy <= minmax * (1 + 1e-6)).all()  # a KL threshold never exceeds the observed range
    assert (entropy < minmax * 0.99).sum() >= len(minmax) // 4, (entropy / minmax).round(3)


def test_one_calibration_serves_every_later_quantization(prepared, batches, tmp_path):
    cache = calibrate(prepared[1], batches, str(tmp_path / "ranges.json"), "percentile", percentile=99.9)
    fresh = quantize_ptq(prepared[1], str(tmp_path / "fresh.onnx"), batches, "percentile", percentile=99.9)
    # no batches at all: the ranges can only come from the cache
    cached = quantize_ptq(prepared[1], str(tmp_path / "cached.onnx"), [], "percentile", calibration_cache=cache)
    np.testing.assert_array_equal(activation_scales(fresh), activation_scales(cached))


def test_too_few_histogram_bins_are_a_config_error(prepared, batches, tmp_path):
    with pytest.raises(ConfigError, match="QUANT.CALIBRATION.HISTOGRAM_BINS must be at least 1024"):
        calibrate(prepared[1], batches, str(tmp_path / "ranges.json"), "entropy", histogram_bins=512)
    assert not list(tmp_path.iterdir())


def _weight_codes(g: Graph):
    """Per conv: (int8 weight codes, per-channel scale) as stored in the file."""
    for conv in g.of_type("Conv"):
        dq = g.weight_dq(conv)
        yield numpy_helper.to_array(g.init[dq.input[0]]), numpy_helper.to_array(g.init[dq.input[1]])


def test_seven_bit_weights_are_ort_reduced_range_and_leave_activations_alone(prepared, batches, tmp_path):
    """The portable format: ORT's reduce_range puts every weight in [-64, 64] with scale max|w| / 64, so no u8 x s8
    pair can reach the int16 limit (2 x 255 x 64 = 32640); activation scales are the 8-bit format's."""
    seven = Graph(quantize_ptq(prepared[1], str(tmp_path / "w7.onnx"), batches, fmt=QuantFormat(weight_bits=7)))
    eight = Graph(quantize_ptq(prepared[1], str(tmp_path / "w8.onnx"), batches, fmt=QuantFormat(weight_bits=8)))
    for (codes7, scale7), (codes8, scale8) in zip(_weight_codes(seven), _weight_codes(eight)):
        assert codes7.min() >= -64 and codes7.max() <= 64 and np.abs(codes7).max() == 64
        assert np.abs(codes8).max() == 127
        np.testing.assert_allclose(scale7 * 64, scale8 * 127, rtol=1e-5)  # both max|w| per channel
    activation_scales = lambda g: sorted(float(numpy_helper.to_array(g.init[n.input[1]]))  # noqa: E731
                                         for n in g.of_type("QuantizeLinear"))
    assert activation_scales(seven) == activation_scales(eight)
    assert accumulation_bounds(seven.path)["u8s8_pair_sum_max"] <= 32640
    assert accumulation_bounds(eight.path)["u8s8_pair_sum_max"] > 32767


class _SharedGate(torch.nn.Module):
    """OSNet's pattern: one 1x1 convolution (a channel gate) applied to two streams, so its weights are shared."""

    def __init__(self):
        super().__init__()
        self.stem = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.gate = torch.nn.Conv2d(8, 8, 1)

    def forward(self, x):
        y = torch.relu(self.stem(x))
        return (self.gate(y) + self.gate(torch.relu(-y + 1.0))).mean(dim=(2, 3))


def test_shared_weights_get_one_copy_per_layer_and_load_with_exact_x86_accumulation(batches, tmp_path):
    torch.manual_seed(0)
    fp32 = export_onnx(_SharedGate().eval(), str(tmp_path / "fp32.onnx"), SIZE)
    prepared = preprocess(fp32, str(tmp_path / "prepared.onnx"))
    graph = onnx.load(prepared).graph
    weights = [node.input[1] for node in graph.node if node.op_type == "Conv"]
    assert len(weights) == 3 and len(set(weights)) == 3  # the gate's two uses read two initializers
    int8 = quantize_ptq(prepared, str(tmp_path / "int8.onnx"), batches, "minmax", QuantFormat("uint8", weight_bits=8))
    # ONNX Runtime's U8U8 weight conversion (how ort_vnni is judged without VNNI) refused one weight read by two
    # convolutions: "Attempt to replace the existing tensor"
    session = ort_session(int8, config={"session.x64quantprecision": "1"})
    reference = ort_session(fp32).run(None, {"images": batches[0].numpy()})[0]
    got = session.run(None, {session.get_inputs()[0].name: batches[0].numpy()})[0]
    cosine = (got * reference).sum(1) / (np.linalg.norm(got, axis=1) * np.linalg.norm(reference, axis=1))
    assert cosine.min() > 0.99


def test_weighted_inputs_placement_quantizes_only_what_weighted_layers_read(prepared, batches, tmp_path):
    """TensorRT's placement (format.PLACEMENTS): every activation Q/DQ pair feeds a convolution (a residual Add may
    read the same pair, as ONNX Runtime hands every consumer of a quantized tensor its DequantizeLinear), no
    convolution output is quantized, and the file passes TensorRT's structural checks. With symmetric int8
    activations it lands closer to FP32 than ONNX Runtime's fused placement, whose extra requantizations each cost
    a bit of range on a post-ReLU tensor."""
    from compressreid.export.tensorrt_check import check_for_tensorrt

    trt = QuantFormat("int8", True, 8, quantized_bias=False)
    files = {p: quantize_ptq(prepared[1], str(tmp_path / f"{p}.onnx"), batches, fmt=replace(trt, placement=p))
             for p in ("fused", "weighted_inputs")}
    g = Graph(files["weighted_inputs"])
    activation_dq = [n for n in g.of_type("DequantizeLinear") if n.input[0] not in g.init]
    assert activation_dq and len(activation_dq) < len([n for n in Graph(files["fused"]).of_type("DequantizeLinear")
                                                       if n.input[0] not in Graph(files["fused"]).init])
    for dq in activation_dq:
        readers = {c.op_type for c in g.consumers[dq.output[0]]}
        assert readers & set(WEIGHTED_OPS) and readers <= {*WEIGHTED_OPS, "Add"}, readers
    for conv in g.of_type("Conv"):
        assert all(c.op_type != "QuantizeLinear" for c in g.consumers.get(conv.output[0], [])), conv.name
    checks = check_for_tensorrt(files["weighted_inputs"])
    assert not any(v for k, v in checks.items() if k != "details"), checks
    fp32 = torch.from_numpy(run(prepared[1], 8))
    cosine = {p: float(torch.nn.functional.cosine_similarity(torch.from_numpy(run(f, 8)), fp32).mean())
              for p, f in files.items()}
    assert cosine["weighted_inputs"] > cosine["fused"], cosine


def test_unknown_placement_is_a_config_error():
    with pytest.raises(ConfigError, match="placement 'everywhere' is unknown"):
        QuantFormat(placement="everywhere")
