"""QAT modules: BN pairing by tracing, folding, the schedule, and that the exported QDQ graph is the fake-quant model."""

import pytest
import torch
from torch import nn

from compressreid.config import get_cfg
from compressreid.export.onnx_export import example_images, export_onnx
from compressreid.export.ort_model import OrtEmbedder
from compressreid.modeling import build_model
from compressreid.quant.fake_quant import ActivationQuantizer, ExportConv2d, QATConv2d, qdq_translations
from compressreid.quant.format import QuantFormat
from compressreid.quant.saturation import accumulation_bounds
from compressreid.quant.qat import (QATScheduleHook, calibrate_observers, conv_bn_pairs, freeze_for_export,
                                    prepare_qat)

import onnx
from onnx import numpy_helper

TINY = {
    "resnet_ibn": {"MODEL.BACKBONE.NAME": "build_resnet_backbone", "MODEL.BACKBONE.DEPTH": "18x",
                   "MODEL.BACKBONE.WIDTH": 0.125, "MODEL.BACKBONE.WITH_IBN": True, "MODEL.BACKBONE.FEAT_DIM": 64},
    "osnet": {"MODEL.BACKBONE.NAME": "osnet", "MODEL.BACKBONE.WIDTH": 0.25, "MODEL.BACKBONE.FEAT_DIM": 128},
    "mobilenetv3": {"MODEL.BACKBONE.NAME": "mobilenetv3_small", "MODEL.BACKBONE.FEAT_DIM": 576},
}


def tiny_model(name: str) -> nn.Module:
    cfg = get_cfg()
    for key, value in TINY[name].items():
        cfg.merge_from_list([key, str(value)])
    cfg.INPUT.SIZE_TEST = [64, 32]
    torch.manual_seed(0)
    model = build_model(cfg)
    model.train()
    with torch.no_grad():  # non-trivial BN statistics, so folding matters
        for seed in range(3):
            model.backbone(example_images((64, 32), 8, seed) / 255.0)
    return model.eval()


def test_conv_bn_pairs_follow_the_forward():
    model = tiny_model("resnet_ibn")
    pairs = dict(conv_bn_pairs(model, example_images((64, 32), 2)))
    assert pairs["backbone.conv1"] == "backbone.bn1"
    assert pairs["backbone.layer3.0.conv2"] == "backbone.layer3.0.bn2"
    assert pairs["backbone.layer1.0.conv1"] is None  # feeds IBN through a channel split: not foldable
    assert len(pairs) == sum(isinstance(m, nn.Conv2d) for m in model.modules())


def test_prepared_model_keeps_fp32_function_before_quantization_noise():
    model = tiny_model("resnet_ibn")
    images = example_images((64, 32), 4, seed=5)
    reference = model(images)
    prepare_qat(model, images)
    calibrate_observers(model, [images])
    assert any(isinstance(m, QATConv2d) for m in model.modules())
    cosine = nn.functional.cosine_similarity(model(images), reference).min()
    assert cosine > 0.98  # only INT8 rounding separates them: the BN folding itself is exact


@pytest.mark.parametrize("name", sorted(TINY))
def test_exported_qdq_graph_reproduces_the_fake_quant_model(name, tmp_path):
    model = tiny_model(name)
    images = example_images((64, 32), 6, seed=3)
    prepare_qat(model, images)
    calibrate_observers(model, [example_images((64, 32), 8, seed=s) for s in range(2)])
    fake_quant = model(images)
    frozen = freeze_for_export(model)
    assert torch.equal(frozen(images), fake_quant)  # integer weights + dequantize == fake quantization, exactly
    assert any(isinstance(m, ExportConv2d) for m in frozen.modules())
    path = export_onnx(frozen, str(tmp_path / "qat.onnx"), (64, 32), 18, qdq_translations())
    ops = [node.op_type for node in onnx.load(path).graph.node]
    assert ops.count("QuantizeLinear") > 0 and ops.count("DequantizeLinear") > ops.count("QuantizeLinear")
    # each tensor is quantized once: a DQ feeding a Q would be merged by ONNX Runtime into a pair of a third scale
    graph = onnx.load(path).graph
    producers = {out: node for node in graph.node for out in node.output}
    assert not [n.name for n in graph.node if n.op_type == "QuantizeLinear" and n.input[0] in producers
                and producers[n.input[0]].op_type == "DequantizeLinear"]
    int8_weights = [t for t in onnx.load(path).graph.initializer if t.data_type == onnx.TensorProto.INT8]
    assert len(int8_weights) >= sum(isinstance(m, ExportConv2d) for m in frozen.modules())
    shipped = OrtEmbedder(path)(images)
    cosine = nn.functional.cosine_similarity(shipped, fake_quant).min()
    assert cosine > 0.999  # ORT's integer kernels round a few values differently; nothing more


def test_a_bias_too_large_for_int32_raises_the_weight_scale_in_training_and_export_alike():
    """OSNet's channel gate fc2: tiny 1x1 weights, a real bias, a small input range. With the weight scale of the
    weights alone, bias / (input scale * weight scale) is ~1e10 and the shipped INT32 bias wrapped around."""
    conv = nn.Conv2d(8, 4, 1, bias=True)
    with torch.no_grad():
        conv.weight.uniform_(-1e-4, 1e-4)
        conv.bias.fill_(3.0)
    qat = QATConv2d(conv).eval()
    x = torch.rand(2, 8, 3, 3) * 0.05
    qat.input_quant.calibrating = qat.output_quant.calibrating = True
    qat(x)
    qat.input_quant.calibrating = qat.output_quant.calibrating = False
    fake_quant = qat(x)
    frozen = ExportConv2d(qat)
    assert frozen.bias_int32.abs().max().item() < 2 ** 31 - 1
    assert torch.equal(frozen(x), fake_quant)
    assert torch.allclose(fake_quant, conv(x), atol=0.05)  # the bias survives (3.0, not a wrapped-around value)


def test_a_conv_reading_a_conv_shares_its_quantizer():
    """OSNet's LightConv3x3 is a linear 1x1 conv read directly by a depthwise 3x3 conv: one tensor, one quantizer."""
    model = tiny_model("osnet")
    prepare_qat(model, example_images((64, 32), 2))
    readers = [m for m in model.modules() if isinstance(m, QATConv2d) and m.input_prequantized]
    assert readers and all(isinstance(m.input_quant, ActivationQuantizer) for m in readers)
    writers = {id(m.output_quant) for m in model.modules() if isinstance(m, QATConv2d)}
    assert all(id(m.input_quant) in writers for m in readers)
    resnet = tiny_model("resnet_ibn")
    prepare_qat(resnet, example_images((64, 32), 2))
    assert not any(m.input_prequantized for m in resnet.modules() if isinstance(m, QATConv2d))  # ReLU between


class _Loop:
    iter = 0


def test_schedule_freezes_bn_then_observers():
    model = tiny_model("resnet_ibn")
    prepare_qat(model, example_images((64, 32), 2))
    hook = QATScheduleHook(model, freeze_bn_iter=2, freeze_observer_iter=4)
    hook.loop = _Loop()
    convs = [m for m in model.modules() if isinstance(m, QATConv2d) and m.bn is not None]
    observers = [m for m in model.modules() if isinstance(m, ActivationQuantizer)]
    seen = []
    for it in range(6):
        hook.loop.iter = it
        hook.before_step()
        seen.append((all(c.bn_frozen for c in convs), all(not o.observing for o in observers)))
    assert seen == [(False, False)] * 2 + [(True, False)] * 2 + [(True, True)] * 2


def test_bn_statistics_update_until_frozen_and_not_after():
    model = tiny_model("resnet_ibn")
    prepare_qat(model, example_images((64, 32), 2))
    conv = next(m for m in model.modules() if isinstance(m, QATConv2d) and m.bn is not None)
    model.train()
    before = conv.bn.running_mean.clone()
    model(example_images((64, 32), 4, seed=9))
    assert not torch.equal(conv.bn.running_mean, before)
    conv.bn_frozen = True
    frozen = conv.bn.running_mean.clone()
    model(example_images((64, 32), 4, seed=10))
    assert torch.equal(conv.bn.running_mean, frozen)


@pytest.mark.parametrize("fmt, dtype", [(QuantFormat("uint8"), "UINT8"), (QuantFormat("int8"), "INT8"),
                                        (QuantFormat("int8", symmetric_activations=True, weight_bits=8), "INT8")])
def test_activation_type_reaches_the_graph(fmt, dtype, tmp_path):
    model = tiny_model("resnet_ibn")
    images = example_images((64, 32), 4, seed=2)
    prepare_qat(model, images, fmt)
    calibrate_observers(model, [images])
    fake_quant = model(images)
    path = export_onnx(freeze_for_export(model), str(tmp_path / "qat.onnx"), (64, 32), 18, qdq_translations())
    graph = onnx.load(path).graph
    casts = {a.i for n in graph.node if n.op_type == "Cast" for a in n.attribute if a.name == "to"}
    folded = {t.data_type for t in graph.initializer}
    wanted = getattr(onnx.TensorProto, dtype)
    assert wanted in casts | folded  # zero points of the requested activation type (cast, or folded to a constant)
    # the graph's own Q/DQ semantics (node by node): 8-bit weights would saturate ORT's fused kernels without VNNI
    semantics = OrtEmbedder(path, optimized=False)(images)
    assert nn.functional.cosine_similarity(semantics, fake_quant).min() > 0.999
    if fmt.symmetric_activations:  # TensorRT's requirement: every activation zero point is 0
        zero_points = [numpy_helper.to_array(t) for t in graph.initializer if t.data_type == onnx.TensorProto.INT8
                       and not t.dims]
        assert zero_points and not any(int(z) for z in zero_points)


@pytest.mark.parametrize("bits, qmax", [(7, 64), (8, 127)])
def test_qat_trains_and_exports_the_weight_range_of_its_format(bits, qmax, tmp_path):
    """QAT trains with exactly the constraint it exports: 7-bit weights in [-64, 64], so fake-quant and the shipped
    file stay equal on CPUs without VNNI too."""
    model = tiny_model("resnet_ibn")
    images = example_images((64, 32), 4, seed=4)
    prepare_qat(model, images, QuantFormat(weight_bits=bits))
    calibrate_observers(model, [images])
    fake_quant = model(images)
    frozen = freeze_for_export(model)
    assert torch.equal(frozen(images), fake_quant)
    codes = [m.weight_int8 for m in frozen.modules() if isinstance(m, ExportConv2d)]
    assert max(int(c.abs().max()) for c in codes) == qmax
    path = export_onnx(frozen, str(tmp_path / "qat.onnx"), (64, 32), 18, qdq_translations())
    bound = accumulation_bounds(path)["u8s8_pair_sum_max"]
    assert (bound <= 32767) == (bits == 7)
    if bits == 7:  # exact accumulation on every CPU kind: ORT's fused kernels reproduce the fake-quant model
        cosine = nn.functional.cosine_similarity(OrtEmbedder(path)(images), fake_quant).min()
        assert cosine > 0.999
