"""benchmarks/int8_error_split.py's graph surgery on a tiny quantized ResNet: FP32 weights in place of the integer
ones, the activations' rounding taken out (their clipping kept), and both."""

from __future__ import annotations

import os

import numpy as np
import onnx
import pytest
import torch
from torch.nn import functional as F

from compressreid.export.onnx_export import example_images, export_onnx
from compressreid.export.ort_model import ort_session
from compressreid.quant.format import QuantFormat
from compressreid.quant.ptq import calibrate, preprocess, quantize_ptq
from compressreid.quant.saturation import int8_weighted_nodes

from tiny_models import tiny_resnet18

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SIZE = (32, 16)


FORMATS = {"portable": QuantFormat(),  # uint8 activations, asymmetric, int32 biases
           "int8_symmetric": QuantFormat(activations="int8", symmetric_activations=True, weight_bits=8)}


@pytest.fixture(scope="module", params=list(FORMATS))
def split(tmp_path_factory, request):
    folder = tmp_path_factory.mktemp("split")
    prepared = preprocess(export_onnx(tiny_resnet18(SIZE), str(folder / "fp32.onnx"), SIZE),
                          str(folder / "prepared.onnx"))
    batches = [example_images(SIZE, 8, seed=s) for s in (40, 50)]  # seed 50's images: judged below
    cache = calibrate(prepared, batches, str(folder / "cal.json"))
    path = quantize_ptq(prepared, str(folder / "int8.onnx"), batches, fmt=FORMATS[request.param],
                        calibration_cache=cache)
    with pytest.MonkeyPatch.context() as patch:
        patch.syspath_prepend(os.path.join(REPO, "benchmarks"))
        import int8_error_split
    return int8_error_split, onnx.load(path), onnx.load(prepared), folder


def _integer_weights(model: onnx.ModelProto) -> int:
    """How many Conv/Gemm weights are read from int8 codes (a DequantizeLinear of an int8 initializer)."""
    int8 = {t.name for t in model.graph.initializer if t.data_type == onnx.TensorProto.INT8}
    codes = {n.output[0] for n in model.graph.node if n.op_type == "DequantizeLinear" and n.input[0] in int8}
    return sum(n.input[1] in codes for n in model.graph.node if n.op_type in ("Conv", "Gemm"))


def _cosine(model: onnx.ModelProto, reference: str, folder) -> float:
    images = example_images(SIZE, 8, seed=50)  # calibrated on: no activation leaves its range
    path = str(folder / "variant.onnx")
    onnx.save(model, path)
    outputs = []
    for file, optimized in ((path, False), (reference, True)):
        session = ort_session(file, optimized=optimized)
        outputs.append(torch.from_numpy(session.run(None, {session.get_inputs()[0].name: images.numpy()})[0]))
    return float(F.cosine_similarity(*outputs).mean())


def test_each_variant_takes_out_what_it_names_and_nothing_else(split):
    module, quantized, prepared, folder = split
    activation_qs = [n for n in quantized.graph.node if n.op_type == "QuantizeLinear"]
    assert activation_qs and int8_weighted_nodes(quantized)
    weights_float = module.variant(quantized, prepared, integer_weights=False, rounded_activations=True)
    assert not int8_weighted_nodes(weights_float) and _integer_weights(weights_float) == 0  # no integer layer left
    floats = {t.name for t in weights_float.graph.initializer if t.data_type == onnx.TensorProto.FLOAT}
    convs = [n for n in weights_float.graph.node if n.op_type == "Conv"]
    assert all(n.input[1] in floats and (len(n.input) < 3 or n.input[2] in floats) for n in convs)  # biases too
    assert len([n for n in weights_float.graph.node if n.op_type == "QuantizeLinear"]) == len(activation_qs)
    unrounded = module.variant(quantized, prepared, integer_weights=True, rounded_activations=False)
    assert not any(n.op_type == "QuantizeLinear" for n in unrounded.graph.node)
    assert _integer_weights(unrounded) == _integer_weights(quantized) == len(int8_weighted_nodes(quantized))
    assert sum(n.op_type == "Clip" for n in unrounded.graph.node) >= len(activation_qs)
    onnx.checker.check_model(unrounded)
    onnx.checker.check_model(weights_float)


def test_with_nothing_rounded_the_file_computes_its_fp32_model(split):
    module, quantized, prepared, folder = split
    reference = str(folder / "prepared.onnx")
    neither = _cosine(module.variant(quantized, prepared, False, False), reference, folder)
    as_quantized = _cosine(module.variant(quantized, prepared, True, True), reference, folder)
    assert neither > 0.99999  # only the clipping is left, and these images stay inside it
    assert as_quantized < 0.9999
    assert np.isfinite(as_quantized) and as_quantized > 0.9
