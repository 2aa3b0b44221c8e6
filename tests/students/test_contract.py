"""Model contract over EVERY registered backbone: eval output, declared taps, ONNX parity, pruning, INT8 prep.

Cases come from the BACKBONES registry itself, so a new registration is covered automatically (with the
default config unless ``TINY`` below gives it small settings). Each case is a Baseline + EmbeddingHead.
"""

from __future__ import annotations

import math

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
import torch_pruning as tp
from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
from onnxruntime.quantization.shape_inference import quant_pre_process

from compressreid.config import get_cfg
from compressreid.export.onnx_export import export_onnx as compressreid_export_onnx
from compressreid.modeling import BACKBONES, build_model

from tiny_models import warm_backbone_norms

H, W = 64, 32

# Small settings per registry name; each dict is one case (MODEL.BACKBONE keys). Names absent here are
# built with the defaults, so keep new backbones' defaults runnable or add a tiny entry.
# (ResNet-50 is the teachers' size and is tested with them: 16 bottlenecks drift ~1e-4 abs from ORT in float32.)
TINY = {
    "build_resnet_backbone": [
        {"DEPTH": "18x", "WIDTH": 0.25},
        {"DEPTH": "18x", "WIDTH": 0.25, "WITH_IBN": True},
        {"DEPTH": "34x", "WIDTH": 0.25},
        {"DEPTH": "34x", "WIDTH": 0.25, "WITH_IBN": True},
    ],
    "osnet": [{"WIDTH": 0.25}, {"WIDTH": 0.25, "WITH_IBN": True}],
    "osnet_ain": [{"WIDTH": 0.25}],
    "mobilenetv3_small": [{"WIDTH": 0.5}, {"WIDTH": 0.5, "LAST_STRIDE": 2}],
    "mobilenetv3_large": [{"WIDTH": 0.25}],
    "timm": [{"TIMM_NAME": "test_resnet"}],
}


def _cases():
    cases = []
    for name in BACKBONES:
        for overrides in TINY.get(name, [{}]):
            tag = "-".join(f"{k.lower()}={v}" for k, v in overrides.items())
            cases.append(pytest.param(name, overrides, id=f"{name}[{tag}]" if tag else name))
    return cases


CASES = _cases()


def images(batch: int = 2, seed: int = 0) -> torch.Tensor:
    return torch.rand(batch, 3, H, W, generator=torch.Generator().manual_seed(seed)) * 255.0


def build(name: str, overrides: dict) -> torch.nn.Module:
    cfg = get_cfg()
    cfg.MODEL.BACKBONE.NAME = name
    for key, value in overrides.items():
        cfg.MODEL.BACKBONE[key] = value
    cfg.INPUT.SIZE_TEST = [H, W]
    torch.manual_seed(0)
    return warm_backbone_norms(build_model(cfg, num_classes=0), (H, W))


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """Build each case once and export it to ONNX once (parity and INT8 tests share the file)."""
    cache = {}

    def get(name: str, overrides: dict):
        key = (name, tuple(sorted(overrides.items())))
        if key not in cache:
            model = build(name, overrides)
            path = tmp_path_factory.mktemp("onnx") / "model.onnx"
            export_onnx(model, str(path))
            cache[key] = (model, str(path))
        return cache[key]

    return get


def export_onnx(model: torch.nn.Module, path: str) -> None:
    """The product's exporter (torch.export-based, opset 18, parity-checked by the quantize tool): every registered
    backbone must go through the same path a user's INT8 run takes."""
    compressreid_export_onnx(model, path, (H, W))


def ort_session(path: str) -> "ort.InferenceSession":
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    return ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])


def test_every_tiny_entry_names_a_registered_backbone():
    assert set(TINY) <= set(BACKBONES), f"stale TINY entries: {sorted(set(TINY) - set(BACKBONES))}"


@pytest.mark.parametrize("name, overrides", CASES)
def test_eval_output_is_embedding(name, overrides):
    model = build(name, overrides)
    with torch.no_grad():
        out = model(images(3))
    assert type(out) is torch.Tensor
    assert out.shape == (3, model.embedding_dim)
    assert model.embedding_dim == model.backbone.out_channels  # no reduction layer configured
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("name, overrides", CASES)
def test_feature_info_matches_forward_hooks(name, overrides):
    model = build(name, overrides)
    assert model.feature_info, "a backbone must declare at least one tap"
    seen = {}

    def record(key):
        def hook(_module, _inputs, output):
            seen[key] = tuple(output.shape)  # returns None: the output is left untouched
        return hook

    handles = [model.get_submodule(tap.module).register_forward_hook(record(tap.module))
               for tap in model.feature_info]
    with torch.no_grad():
        model(images())
    for handle in handles:
        handle.remove()
    for tap in model.feature_info:
        _, channels, h, w = seen[tap.module]
        assert channels == tap.channels, tap
        # padded/ceil-mode pooling may add one row or column; a wrong stride is off by a factor
        assert H // tap.stride <= h <= math.ceil(H / tap.stride) + 1, (tap, h)
        assert W // tap.stride <= w <= math.ceil(W / tap.stride) + 1, (tap, w)
    assert model.feature_info[-1].channels == model.backbone.out_channels


@pytest.mark.parametrize("name, overrides", CASES)
def test_onnx_export_matches_pytorch(name, overrides, exported):
    model, path = exported(name, overrides)
    graph = onnx.load(path)
    onnx.checker.check_model(graph)
    assert [i.name for i in graph.graph.input] == ["images"]
    x = images(3, seed=2)  # a batch size other than the traced one: the batch axis is dynamic
    with torch.no_grad():
        expected = model(x).numpy()
    (actual,) = ort_session(path).run(["embedding"], {"images": x.numpy()})
    assert actual.shape == expected.shape
    np.testing.assert_allclose(actual, expected, atol=1e-4, rtol=0)


@pytest.mark.parametrize("name, overrides", CASES)
def test_one_pruning_step_keeps_embedding_dim(name, overrides):
    # IBN-a splits channels between an InstanceNorm and a BatchNorm; Torch-Pruning alone traces into the split
    # and never reaches the BatchNorm half, so IBN is traced as a leaf and pruned by compressreid's IBNPruner.
    from compressreid.prune.ibn import customized_pruners, trace_ibn_as_leaf

    model = build(name, overrides)
    dim = model.embedding_dim
    before = sum(p.numel() for p in model.parameters())
    with trace_ibn_as_leaf(model):  # the dependency graph is traced when the pruner is built
        pruner = tp.pruner.MagnitudePruner(
            model, images(1), importance=tp.importance.MagnitudeImportance(p=2), pruning_ratio=0.25,
            ignored_layers=[model.heads],  # BNNeck (and classifier): the embedding dimension is the interface
            customized_pruners=customized_pruners())
    pruner.step()
    with torch.no_grad():
        out = model(images(2))
    assert out.shape == (2, dim)
    assert torch.isfinite(out).all()
    assert sum(p.numel() for p in model.parameters()) < before


class _TwoBatches(CalibrationDataReader):
    """Two calibration batches of random 0-255 images (the model normalises inside)."""

    def __init__(self):
        self._batches = iter([{"images": images(2, seed=s).numpy()} for s in (10, 11)])

    def get_next(self):
        return next(self._batches, None)


@pytest.mark.parametrize("name, overrides", CASES)
def test_int8_static_quantization_runs(name, overrides, exported, tmp_path):
    model, path = exported(name, overrides)
    prepared, quantized = str(tmp_path / "prep.onnx"), str(tmp_path / "int8.onnx")
    quant_pre_process(path, prepared)
    quantize_static(prepared, quantized, _TwoBatches(), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QInt8, weight_type=QuantType.QInt8)
    graph = onnx.load(quantized)
    assert any(node.op_type == "QuantizeLinear" for node in graph.graph.node)
    (out,) = ort_session(quantized).run(["embedding"], {"images": images(3, seed=3).numpy()})
    assert out.shape == (3, model.embedding_dim)
    assert np.isfinite(out).all()
