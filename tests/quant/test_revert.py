"""compressreid.quant.revert: nodes of a QDQ file put back in float (the fallback of a file this run cannot quantize
again, QAT's)."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from compressreid.quant.revert import qdq_reverter, reversible_nodes, revert_to_float


def _qdq_conv_graph() -> onnx.ModelProto:
    """x -> Q/DQ (uint8) -> Conv (int8 weights per output channel, DQ axis 0) -> Relu -> Q/DQ -> Conv (per tensor)."""
    rng = np.random.default_rng(0)
    w1 = rng.integers(-64, 65, (4, 3, 3, 3)).astype(np.int8)
    w2 = rng.integers(-64, 65, (2, 4, 1, 1)).astype(np.int8)
    init = [numpy_helper.from_array(a, n) for a, n in [
        (np.float32(0.05), "xs"), (np.uint8(128), "xz"), (w1, "w1"), (np.array([0.01, 0.02, 0.03, 0.04], np.float32),
                                                                        "w1s"),
        (np.zeros(4, np.int8), "w1z"), (np.float32(0.02), "hs"), (np.uint8(0), "hz"), (w2, "w2"),
        (np.float32(0.015), "w2s"), (np.int8(0), "w2z")]]
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "xs", "xz"], ["xq"], name="q_x"),
        helper.make_node("DequantizeLinear", ["xq", "xs", "xz"], ["xd"], name="dq_x"),
        helper.make_node("DequantizeLinear", ["w1", "w1s", "w1z"], ["w1d"], name="dq_w1", axis=0),
        helper.make_node("Conv", ["xd", "w1d"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["h"], name="relu"),
        helper.make_node("QuantizeLinear", ["h", "hs", "hz"], ["hq"], name="q_h"),
        helper.make_node("DequantizeLinear", ["hq", "hs", "hz"], ["hd"], name="dq_h"),
        helper.make_node("DequantizeLinear", ["w2", "w2s", "w2z"], ["w2d"], name="dq_w2"),
        helper.make_node("Conv", ["hd", "w2d"], ["y"], name="conv2"),
    ]
    graph = helper.make_graph(nodes, "qdq", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 6, 5])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2, 6, 5])], init)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _run(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {"x": x})[0]


def _float_reference(x: np.ndarray, model: onnx.ModelProto, unrounded: tuple) -> np.ndarray:
    """The same graph computed with every weight dequantized (ONNX Runtime's own DequantizeLinear, per axis and per
    tensor) and the inputs of the convolutions ``unrounded`` read before their quantizer."""
    weights = {}
    for name in ("dq_w1", "dq_w2"):  # ORT's DequantizeLinear of each weight, alone
        dq = next(n for n in model.graph.node if n.name == name)
        inits = {t.name: t for t in model.graph.initializer if t.name in dq.input}
        graph = helper.make_graph([dq], "dq", [], [helper.make_tensor_value_info(dq.output[0], TensorProto.FLOAT,
                                                                                 None)], list(inits.values()))
        session = ort.InferenceSession(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
                                       .SerializeToString(), providers=["CPUExecutionProvider"])
        weights[name] = session.run(None, {})[0]
    ref = onnx.ModelProto()
    ref.CopyFrom(model)
    for node in ref.graph.node:
        if node.name == "conv1":
            node.input[1] = "w1f"
            node.input[0] = "x" if "conv1" in unrounded else node.input[0]
        if node.name == "conv2":
            node.input[1] = "w2f"
            node.input[0] = "h" if "conv2" in unrounded else node.input[0]
    ref.graph.initializer.extend([numpy_helper.from_array(weights["dq_w1"], "w1f"),
                                  numpy_helper.from_array(weights["dq_w2"], "w2f")])
    return _run(ref, x)


def test_a_reverted_node_reads_the_dequantized_weights_and_the_unrounded_input():
    model = _qdq_conv_graph()
    x = np.random.default_rng(1).normal(0, 3, (1, 3, 6, 5)).astype(np.float32)
    assert reversible_nodes(model) == ["conv1", "conv2"]
    one = revert_to_float(model, ["conv1"])
    onnx.checker.check_model(one)
    kept = {n.name for n in one.graph.node}
    assert {"q_x", "dq_x", "dq_w1"}.isdisjoint(kept) and {"q_h", "dq_h", "dq_w2"} <= kept  # conv2 stays INT8
    np.testing.assert_allclose(_run(one, x), _float_reference(x, model, ("conv1",)), rtol=1e-5, atol=1e-5)
    assert not np.allclose(_run(one, x), _run(model, x), atol=1e-3)  # the input's rounding is gone
    # reverting nothing changes nothing; the source file is not touched
    np.testing.assert_array_equal(_run(revert_to_float(model, []), x), _run(model, x))
    assert len(model.graph.node) == 9


def test_reverting_every_node_leaves_no_quantizer_and_unknown_names_or_quantizing_alone_are_refused(tmp_path):
    model = _qdq_conv_graph()
    path = str(tmp_path / "qdq.onnx")
    onnx.save(model, path)
    quantize = qdq_reverter(path)
    out = quantize(str(tmp_path / "float.onnx"), ["conv1", "conv2"])
    reverted = onnx.load(out)
    assert not any(n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in reverted.graph.node)
    assert {t.name for t in reverted.graph.initializer} == {"conv1_float_input_1", "conv2_float_input_1"}
    x = np.random.default_rng(2).normal(0, 3, (1, 3, 6, 5)).astype(np.float32)
    np.testing.assert_allclose(_run(reverted, x), _float_reference(x, model, ("conv1", "conv2")), rtol=1e-5,
                               atol=1e-5)
    with pytest.raises(KeyError, match="no node named 'conv9'"):
        revert_to_float(model, ["conv9"])
    with pytest.raises(ValueError, match="revert_alone"):
        quantize(str(tmp_path / "alone.onnx"), (), ["conv1"])
