"""model_card.json (compressreid.export.model_card): built from the graph, checked against it, refused when a field
disagrees (naming the field), and found next to an ONNX file."""

from __future__ import annotations

import json

import onnx
import onnxruntime
import pytest

import compressreid
from compressreid.errors import ExportError
from compressreid.export.model_card import (build_model_card, check_model_card, graph_embedding_dim,
                                            read_card_if_present, write_model_card)

H, W, DIM = 8, 4, 3


def write_graph(path, height=H, width=W, input_name="images") -> str:
    """images [batch, 3, H, W] -> GlobalAveragePool -> Flatten -> embedding [batch, 3]: a valid embedding graph."""
    x = onnx.helper.make_tensor_value_info(input_name, onnx.TensorProto.FLOAT, ["batch", 3, height, width])
    y = onnx.helper.make_tensor_value_info("embedding", onnx.TensorProto.FLOAT, ["batch", DIM])
    nodes = [onnx.helper.make_node("GlobalAveragePool", [input_name], ["pooled"]),
             onnx.helper.make_node("Flatten", ["pooled"], ["embedding"])]
    model = onnx.helper.make_model(onnx.helper.make_graph(nodes, "tiny", [x], [y]),
                                   opset_imports=[onnx.helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return str(path)


def make_card(onnx_path, accepted=True):
    return build_model_card(onnx_path, (H, W), metrics={"int8": {"mAP": 50.0}, "fp32": {"mAP": 50.2}},
                            gates=[{"rule": "mAP >= fp32 - 0.5", "passed": True}], accepted=accepted,
                            latency={"int8": {"batch1": {"ms_p50": 1.0}}}, method={"method": "ptq"},
                            source="runs/student")


@pytest.fixture
def shipped(tmp_path):
    """A graph and its matching model_card.json in one folder."""
    onnx_path = write_graph(tmp_path / "student_int8.onnx")
    card_path = str(tmp_path / "model_card.json")
    write_model_card(card_path, make_card(onnx_path))
    return onnx_path, card_path


def test_card_describes_the_graph_and_how_to_feed_it(shipped):
    onnx_path, card_path = shipped
    card = json.loads(open(card_path, encoding="utf-8").read())
    assert card["model"] == "student_int8.onnx" and card["accepted"] is True and card["source"] == "runs/student"
    assert card["input_name"] == "images" and card["output_name"] == "embedding"
    assert card["input_shape"] == ["batch", 3, H, W]
    assert (card["layout"], card["dtype"], card["color_order"], card["value_range"]) == ("NCHW", "float32", "RGB",
                                                                                       [0, 255])
    assert card["embedding_dim"] == DIM == graph_embedding_dim(onnx_path)
    assert card["l2_normalized"] is False
    assert card["size_bytes"] > 0
    assert card["metrics"]["fp32"]["mAP"] == 50.2 and card["gates"][0]["passed"] is True
    assert card["versions"]["compressreid"] == compressreid.__version__
    assert card["versions"]["onnxruntime"] == onnxruntime.__version__
    assert {"torch", "onnx", "python"} <= set(card["versions"])


def test_matching_card_passes_and_is_found_next_to_the_graph(shipped):
    onnx_path, card_path = shipped
    assert check_model_card(card_path, onnx_path)["embedding_dim"] == DIM
    assert read_card_if_present(onnx_path)["input_name"] == "images"


def test_no_card_next_to_the_graph_is_none(tmp_path):
    assert read_card_if_present(write_graph(tmp_path / "model.onnx")) is None


@pytest.mark.parametrize("field, value, words", [
    ("embedding_dim", 128, "embedding_dim 128 vs graph 3"),
    ("input_shape", ["batch", 3, 16, W], "input height 16 vs graph 8"),
    ("input_shape", ["batch", 3, H, 2], "input width 2 vs graph 4"),
    ("input_name", "input", "input_name 'input' vs graph 'images'"),
])
def test_card_that_disagrees_names_the_field(shipped, field, value, words):
    onnx_path, card_path = shipped
    card = json.loads(open(card_path, encoding="utf-8").read())
    card[field] = value
    write_model_card(card_path, card)
    with pytest.raises(ExportError, match="disagrees with") as info:
        check_model_card(card_path, onnx_path)
    assert words in str(info.value)
    with pytest.raises(ExportError, match=field.split("_")[0]):
        read_card_if_present(onnx_path)


def test_unreadable_card_is_an_export_error(shipped):
    onnx_path, card_path = shipped
    with open(card_path, "w", encoding="utf-8") as handle:
        handle.write("{not json")
    with pytest.raises(ExportError, match="is not readable JSON"):
        check_model_card(card_path, onnx_path)
