"""FP32 ONNX export (compressreid.export): checker, opset, dynamic batch, names, ORT-vs-PyTorch parity on the
students we ship (ResNet-IBN, OSNet, MobileNetV3), refusals, atomic writes, the ORT runner and latency records."""

from __future__ import annotations

import os
import re

import numpy as np
import onnx
import pytest
import torch
from torch import nn

import compressreid
from compressreid.config import get_cfg
from compressreid.errors import ExportError
from compressreid.export import onnx_export
from compressreid.export.latency import measure_latency, measure_torch_latency
from compressreid.export.onnx_export import INPUT_NAME, MIN_OPSET, OUTPUT_NAME, example_images, export_onnx
from compressreid.export.ort_model import OrtEmbedder, check_embedding_graph, ort_session
from compressreid.export.parity import check_export_parity, embedding_parity
from compressreid.modeling import build_model

from tiny_models import warm_backbone_norms

H, W = 64, 32

# One tiny case per family the INT8 path must handle: IBN (InstanceNorm), OSNet (depthwise convs, max-pool
# padding), MobileNetV3 (hard-swish, SE).
FAMILIES = {
    "resnet18_ibn": ("build_resnet_backbone", {"DEPTH": "18x", "WIDTH": 0.125, "WITH_IBN": True}),
    "osnet_x0_25": ("osnet", {"WIDTH": 0.25}),
    "mobilenetv3_small": ("mobilenetv3_small", {"WIDTH": 0.5}),
}


def build_tiny(name: str, overrides: dict) -> nn.Module:
    """A seeded model whose BN statistics come from one batch, so activations have a trained model's scale."""
    cfg = get_cfg()
    cfg.MODEL.BACKBONE.NAME = name
    for key, value in overrides.items():
        cfg.MODEL.BACKBONE[key] = value
    cfg.INPUT.SIZE_TEST = [H, W]
    torch.manual_seed(0)
    return warm_backbone_norms(build_model(cfg, num_classes=0), (H, W))


class MeanNet(nn.Module):
    """The smallest images -> embedding model: one conv, then a mean over space (a ReduceMean, like every head)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.conv(images / 255.0).mean(dim=(2, 3))


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """Each family built and exported once (export costs seconds per model); shared by the tests below."""
    cache = {}

    def get(family: str):
        if family not in cache:
            model = build_tiny(*FAMILIES[family])
            path = str(tmp_path_factory.mktemp(family) / "model.onnx")
            assert export_onnx(model, path, (H, W)) == path
            cache[family] = (model, path)
        return cache[family]

    return get


def default_opset(path: str) -> int:
    return next(o.version for o in onnx.load(path).opset_import if o.domain in ("", "ai.onnx"))


def test_export_passes_the_checker_with_named_dynamic_io(exported):
    model, path = exported("resnet18_ibn")
    onnx.checker.check_model(path, full_check=True)
    assert default_opset(path) >= MIN_OPSET
    graph = onnx.load(path).graph
    assert [i.name for i in graph.input] == [INPUT_NAME] == ["images"]
    assert [o.name for o in graph.output] == [OUTPUT_NAME] == ["embedding"]
    batch, channels, h, w = graph.input[0].type.tensor_type.shape.dim
    assert batch.dim_param and not batch.HasField("dim_value")  # symbolic batch axis
    assert (channels.dim_value, h.dim_value, w.dim_value) == (3, H, W)
    assert check_embedding_graph(path) == [-1, 3, H, W]
    assert not [f for f in os.listdir(os.path.dirname(path)) if f != "model.onnx"]  # no temporary left behind


def test_export_ships_no_debug_metadata(exported):
    _, path = exported("resnet18_ibn")
    raw = open(path, "rb").read()
    source_dir = os.path.dirname(os.path.abspath(compressreid.__file__)).encode()  # where the stack traces point
    assert b"stack_trace" not in raw and source_dir not in raw
    assert all(not node.metadata_props for node in onnx.load(path).graph.node)


def test_exported_graph_runs_at_batch_1_and_3(exported):
    model, path = exported("resnet18_ibn")
    session = ort_session(path, threads=1)
    for batch in (1, 3):
        (out,) = session.run([OUTPUT_NAME], {INPUT_NAME: example_images((H, W), batch, seed=7).numpy()})
        assert out.shape == (batch, model.embedding_dim)
        assert np.isfinite(out).all()


def test_export_overwrites_and_restores_the_training_mode(tmp_path):
    path = tmp_path / "net.onnx"
    path.write_bytes(b"previous artifact")
    model = MeanNet().train()
    export_onnx(model, str(path), (H, W))
    assert model.training  # the exporter switches to eval and back
    assert check_embedding_graph(str(path)) == [-1, 3, H, W]
    assert [p.name for p in tmp_path.iterdir()] == ["net.onnx"]


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_ort_matches_pytorch_within_the_relative_bound(exported, family):
    model, path = exported(family)
    images = example_images((H, W), 4, seed=3)  # not the traced batch size
    parity = check_export_parity(model, OrtEmbedder(path, threads=1), images)
    assert parity.images == 4
    assert parity.max_rel <= 1e-4 and parity.cosine_min >= 0.99999
    assert parity.max_abs == pytest.approx(parity.max_rel * model(images).abs().max().item(), rel=1e-3, abs=1e-9)


def test_opset_below_17_is_refused_before_anything_is_written(tmp_path):
    path = tmp_path / "old.onnx"
    with pytest.raises(ExportError, match="opset 16 is too old: expected >= 17"):
        export_onnx(MeanNet(), str(path), (H, W), opset=16)
    assert not path.exists() and not list(tmp_path.iterdir())


def test_requested_opset_is_the_one_in_the_file(tmp_path):
    """QUANT.OPSET defaults to 17; asking for 17 must give an opset-17 file or a clear ExportError, not a
    silent opset-18 file (the dynamo exporter's down-conversion fails on ReduceMean and keeps 18)."""
    path = tmp_path / "net.onnx"
    try:
        export_onnx(MeanNet(), str(path), (H, W), opset=17)
    except ExportError as exc:
        assert "17" in str(exc)
        return
    assert default_opset(str(path)) == 17


def test_exporter_failure_becomes_one_line_export_error_and_writes_nothing(tmp_path, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("no translation for aten::frobnicate\nlong exporter report ...")

    monkeypatch.setattr(onnx_export.torch.onnx, "export", broken)
    model = MeanNet().train()
    with pytest.raises(ExportError, match=r"ONNX export of MeanNet failed: no translation for aten::frobnicate$"):
        export_onnx(model, str(tmp_path / "x.onnx"), (H, W))
    assert model.training  # restored even on failure
    assert not list(tmp_path.iterdir())


def test_a_graph_rejected_by_the_checker_never_reaches_the_destination(tmp_path, monkeypatch):
    path = tmp_path / "net.onnx"
    path.write_bytes(b"previous artifact")

    def reject(*args, **kwargs):
        raise onnx.checker.ValidationError("bad graph")

    monkeypatch.setattr(onnx_export.onnx.checker, "check_model", reject)
    with pytest.raises(onnx.checker.ValidationError):
        export_onnx(MeanNet(), str(path), (H, W))
    assert path.read_bytes() == b"previous artifact"  # the old file is untouched
    assert [p.name for p in tmp_path.iterdir()] == ["net.onnx"]  # and the temporary is gone


class _Perturbed(nn.Module):
    """The reference's embedding plus seeded noise of ``scale`` times its largest magnitude."""

    def __init__(self, reference: nn.Module, scale: float):
        super().__init__()
        self.reference, self.scale = reference, scale

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        out = self.reference(images)
        noise = torch.randn(out.shape, generator=torch.Generator().manual_seed(0))
        return out + self.scale * out.abs().max() * noise


def test_check_export_parity_raises_on_a_perturbed_candidate(exported):
    model, _ = exported("resnet18_ibn")
    images = example_images((H, W), 4, seed=3)
    same = check_export_parity(model, model, images)
    assert same.max_abs == 0.0 and same.cosine_min == pytest.approx(1.0, abs=1e-6)
    assert embedding_parity(model, _Perturbed(model, 1e-3), images).max_rel > 1e-4
    with pytest.raises(ExportError, match="does not match PyTorch: max relative difference"):
        check_export_parity(model, _Perturbed(model, 1e-3), images)
    with pytest.raises(ExportError, match="min cosine"):
        check_export_parity(model, _Perturbed(model, 1.0), images, max_rel=10.0)  # only the cosine bound trips


class _NaNAt(nn.Module):
    """The model's embeddings with one value NaN (e.g. a graph that divides by zero on some input)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, images):
        out = self.model(images).clone()
        out[0, 0] = float("nan")
        return out


@pytest.mark.parametrize("nan_side", ["candidate", "reference"])
def test_check_export_parity_fails_on_nan_saying_so(exported, nan_side):
    # "max_rel > bound or cosine < bound" is False for NaN, so a NaN embedding used to pass as perfect parity
    model, _ = exported("resnet18_ibn")
    images = example_images((H, W), 4, seed=3)
    reference, candidate = (model, _NaNAt(model)) if nan_side == "candidate" else (_NaNAt(model), model)
    with pytest.raises(ExportError, match="NaN"):
        check_export_parity(reference, candidate, images)


def test_exported_file_gets_the_umask_mode(exported):
    previous = os.umask(0o022)
    try:
        model, path = exported("resnet18_ibn")
        export_onnx(model, path, (H, W))
    finally:
        os.umask(previous)
    assert os.stat(path).st_mode & 0o777 == 0o644  # readable by the users it ships to, not mkstemp's 0600
    assert not [name for name in os.listdir(os.path.dirname(path)) if name.startswith(".export-")]


def test_embedding_parity_refuses_different_shapes(exported):
    model, _ = exported("resnet18_ibn")

    class Truncated(nn.Module):
        def forward(self, images):
            return model(images)[:, :-1]

    with pytest.raises(ExportError, match="embedding shapes differ"):
        embedding_parity(model, Truncated(), example_images((H, W), 2))


def test_ort_embedder_refuses_images_of_another_size(exported):
    model, path = exported("resnet18_ibn")
    embedder = OrtEmbedder(path, threads=1)
    assert embedder.input_name == INPUT_NAME and embedder.input_shape == [-1, 3, H, W]
    assert embedder(example_images((H, W), 2)).shape == (2, model.embedding_dim)
    with pytest.raises(ExportError, match=f"takes {H}x{W} images, got \\(32, 16\\)"):
        embedder(example_images((32, 16), 2))


def _graph(path, input_dims, output_rank=2):
    """A hand-built Identity-like graph with the given input dims (strings are symbolic)."""
    x = onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, input_dims)
    y = onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, ["n", 3] + [1] * (output_rank - 2))
    nodes = [onnx.helper.make_node("GlobalAveragePool", ["x"], ["p"])]
    if output_rank == 2:
        nodes.append(onnx.helper.make_node("Flatten", ["p"], ["y"]))
    else:
        nodes[0].output[0] = "y"
    model = onnx.helper.make_model(onnx.helper.make_graph(nodes, "g", [x], [y]),
                                   opset_imports=[onnx.helper.make_opsetid("", 17)])
    onnx.save(model, str(path))
    return str(path)


@pytest.mark.parametrize("dims, rank, words", [
    (["n", 1, 8, 4], 2, "expected float32 [B, 3, H, W] images"),
    (["n", 3, 8], 2, "expected float32 [B, 3, H, W] images"),
    (["n", 3, 8, 4], 4, "is not a [B, D] embedding"),
])
def test_check_embedding_graph_refuses_other_graphs(tmp_path, dims, rank, words):
    with pytest.raises(ExportError, match=re.escape(words)):
        check_embedding_graph(_graph(tmp_path / "g.onnx", dims, rank))


def test_ort_session_turns_an_unloadable_file_into_export_error(tmp_path):
    path = tmp_path / "garbage.onnx"
    path.write_bytes(b"this is not a protobuf")
    with pytest.raises(ExportError, match="ONNX Runtime cannot load"):
        ort_session(str(path))


def test_latency_records_have_a_sane_structure(exported):
    model, path = exported("resnet18_ibn")
    keys = {"batch", "ms_p50", "ms_mean", "ms_min", "images_per_second", "iters"}
    ort_record = measure_latency(path, (H, W), batch=2, iters=3, threads=1, warmup=1)
    threads = torch.get_num_threads()
    torch_record = measure_torch_latency(model, (H, W), batch=2, iters=3, threads=2, warmup=0)
    assert torch.get_num_threads() == threads  # the caller's thread setting is restored
    for record in (ort_record, torch_record):
        assert set(record) == keys
        assert record["batch"] == 2 and record["iters"] == 3
        assert 0 < record["ms_min"] <= record["ms_p50"] and record["ms_mean"] > 0
        assert record["images_per_second"] > 0
