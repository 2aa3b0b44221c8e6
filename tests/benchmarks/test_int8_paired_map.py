"""benchmarks/int8_paired_map.py feeds each file in the input convention its run's model card names for it."""

from __future__ import annotations

import json

import pytest
import torch

from compressreid.export.conventions import get_convention
from compressreid.quant import compare

@pytest.fixture(scope="module")
def paired(import_benchmark):
    return import_benchmark("int8_paired_map")


def test_each_file_is_fed_in_the_convention_its_card_names(paired, tmp_path):
    images = compare.TestImages("t", torch.full((2, 3, 4, 2), 128.0), [], torch.full((3, 3, 4, 2), 64.0), [])
    card = {"model": "student_int8.onnx", "input_convention": "rgb255",
            "targets": [{"model": "x_compressreid_int8.onnx", "input_convention": "rgb_imagenet"}]}
    (tmp_path / "model_card.json").write_text(json.dumps(card), encoding="utf-8")
    boxmot = paired.fed(images, str(tmp_path / "x_compressreid_int8.onnx"))
    expected = get_convention("rgb_imagenet").from_rgb255(images.q_images)
    assert torch.equal(boxmot.q_images, expected) and not torch.equal(boxmot.q_images, images.q_images)
    for name in ("student_int8.onnx", "student_fp32.onnx"):  # the card's own file; a file it does not list
        assert torch.equal(paired.fed(images, str(tmp_path / name)).g_images, images.g_images)
    assert torch.equal(paired.fed(images, str(tmp_path / "elsewhere" / "a.onnx")).q_images, images.q_images)


def test_openvino_asked_without_the_package_is_one_line_and_exit_2(paired, monkeypatch, capsys, tmp_path):
    """Before any file is read or any model built (the files named here do not exist)."""
    find_spec = paired.importlib.util.find_spec
    monkeypatch.setattr(paired.importlib.util, "find_spec",
                        lambda name, *a: None if name == "openvino" else find_spec(name, *a))
    monkeypatch.setattr("sys.argv", ["int8_paired_map.py", str(tmp_path / "config.yaml"), str(tmp_path / "a.onnx"),
                                     "--runtime", "openvino"])
    assert paired.main() == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["int8_paired_map.py: --runtime openvino needs the openvino package: pip install "
                   "'compressreid[openvino]'"]
