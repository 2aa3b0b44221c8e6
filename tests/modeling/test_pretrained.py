"""Backbone pretraining from local files (MODEL.BACKBONE.PRETRAIN_PATH): torchvision, timm and IBN-Net layouts."""

from __future__ import annotations

import logging

import pytest
import timm
import torch
import torchvision
from safetensors.torch import save_file

from compressreid.config import load_config
from compressreid.errors import CheckpointError, ConfigError
from compressreid.modeling import build_model
from compressreid.modeling.backbones.pretrained import load_pretrained_resnet
from compressreid.modeling.backbones.resnet import ResNetBackbone


def cfg_with(*overrides):
    return load_config("", ["MODEL.BACKBONE.DEPTH", "18x", *overrides])


def assert_backbone_has(model, state):
    own = model.backbone.state_dict()
    for key, value in state.items():
        if not key.startswith("fc."):
            assert torch.equal(own[key], value), key


def torchvision_resnet18_state(seed: int = 0):
    torch.manual_seed(seed)
    state = torchvision.models.resnet18(weights=None).state_dict()
    for key, value in state.items():  # non-default BN statistics, so a skipped buffer would show
        if "running" in key:
            value.uniform_(0.5, 1.5)
    return state


def test_torchvision_state_dict_loads_and_fc_is_ignored(tmp_path, caplog):
    state = torchvision_resnet18_state()
    path = tmp_path / "resnet18.pth"
    torch.save(state, path)
    with caplog.at_level(logging.INFO):
        model = build_model(cfg_with("MODEL.BACKBONE.PRETRAIN", "True", "MODEL.BACKBONE.PRETRAIN_PATH", str(path)), pretrained=True)
    assert_backbone_has(model, state)
    assert "torchvision ResNet weights" in caplog.text and "fc.bias, fc.weight" in caplog.text


def test_timm_safetensors_file_loads(tmp_path):
    torch.manual_seed(1)
    state = timm.create_model("resnet18", pretrained=False).state_dict()
    path = tmp_path / "model.safetensors"
    save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    model = build_model(cfg_with("MODEL.BACKBONE.PRETRAIN", "True", "MODEL.BACKBONE.PRETRAIN_PATH", str(path)), pretrained=True)
    assert_backbone_has(model, state)


def test_ibn_net_release_file_loads_with_its_wrapper_and_prefix(tmp_path):
    """IBN-Net's resnet*_ibn_a .pth.tar: {"state_dict": {"module.conv1.weight": ...}} with bn1.IN / bn1.BN."""
    torch.manual_seed(2)
    source = ResNetBackbone("18x", with_ibn=True)
    state = {k: v.clone() for k, v in source.state_dict().items()}
    assert any(".bn1.IN.weight" in k for k in state)
    state["fc.weight"], state["fc.bias"] = torch.zeros(1000, 512), torch.zeros(1000)
    path = tmp_path / "resnet18_ibn_a.pth.tar"
    torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()}, "epoch": 100}, path)
    target = ResNetBackbone("18x", with_ibn=True)
    report = load_pretrained_resnet(target, str(path))
    assert report.format == "ibn-net" and report.missing == [] and report.unexpected == []
    for key, value in source.state_dict().items():
        assert torch.equal(target.state_dict()[key], value), key


def test_plain_weights_into_an_ibn_backbone_report_the_difference(tmp_path):
    path = tmp_path / "resnet18.pth"
    torch.save(torchvision_resnet18_state(), path)
    report = load_pretrained_resnet(ResNetBackbone("18x", with_ibn=True), str(path))
    assert "layer1.0.bn1.IN.weight" in report.missing
    assert "layer1.0.bn1.weight" in report.unexpected


def test_pretrain_true_with_an_empty_path_is_a_one_line_config_error():
    with pytest.raises(ConfigError, match="PRETRAIN is True but MODEL.BACKBONE.PRETRAIN_PATH is empty") as info:
        build_model(cfg_with("MODEL.BACKBONE.PRETRAIN", "True"), pretrained=True)
    assert "\n" not in str(info.value)


def test_missing_pretrain_file_is_a_config_error(tmp_path):
    missing = str(tmp_path / "nope.pth")
    with pytest.raises(ConfigError, match="PRETRAIN_PATH not found: .*nope.pth"):
        build_model(cfg_with("MODEL.BACKBONE.PRETRAIN", "True", "MODEL.BACKBONE.PRETRAIN_PATH", missing), pretrained=True)


def test_timm_student_follows_the_same_rule():
    cfg = load_config("", ["MODEL.BACKBONE.NAME", "timm", "MODEL.BACKBONE.TIMM_NAME", "mobilenetv3_small_050",
                           "MODEL.BACKBONE.PRETRAIN", "True"])
    with pytest.raises(ConfigError, match="PRETRAIN_PATH is empty"):
        build_model(cfg, pretrained=True)


def test_building_for_inference_never_reads_the_pretrain_file():
    # a fast-reid config dump names an ImageNet file from the training machine; loading the finished
    # model must not need it
    cfg = cfg_with("MODEL.BACKBONE.PRETRAIN", "True", "MODEL.BACKBONE.PRETRAIN_PATH", "/elsewhere/r50_ibn_a.pth")
    assert build_model(cfg).embedding_dim > 0


def test_path_is_ignored_when_pretrain_is_false(tmp_path):
    path = tmp_path / "resnet18.pth"
    state = torchvision_resnet18_state()
    torch.save(state, path)
    model = build_model(cfg_with("MODEL.BACKBONE.PRETRAIN_PATH", str(path)), pretrained=True)
    assert not torch.equal(model.backbone.conv1.weight, state["conv1.weight"])


def test_width_mismatch_names_the_keys(tmp_path):
    path = tmp_path / "resnet18.pth"
    torch.save(torchvision_resnet18_state(), path)
    with pytest.raises(CheckpointError, match=r"shape mismatch.*conv1\.weight: checkpoint \(64, 3, 7, 7\)"):
        build_model(cfg_with("MODEL.BACKBONE.WIDTH", "0.5", "MODEL.BACKBONE.PRETRAIN", "True",
                             "MODEL.BACKBONE.PRETRAIN_PATH", str(path)), pretrained=True)


@pytest.mark.parametrize("extra, reason", [
    ({"conv1.0.weight": torch.zeros(1)}, "deep-stem"),
    ({"layer1.0.IN.weight": torch.zeros(1)}, "IBN-b"),
])
def test_other_resnet_layouts_are_refused(tmp_path, extra, reason):
    state = {**torchvision_resnet18_state(), **extra}
    path = tmp_path / "other.pth"
    torch.save(state, path)
    with pytest.raises(CheckpointError, match=reason):
        load_pretrained_resnet(ResNetBackbone("18x"), str(path))


def test_not_a_resnet_is_refused(tmp_path):
    path = tmp_path / "vit.pth"
    torch.save({"patch_embed.proj.weight": torch.zeros(1)}, path)
    with pytest.raises(CheckpointError, match="not a ResNet state dict"):
        load_pretrained_resnet(ResNetBackbone("18x"), str(path))


@pytest.mark.parametrize("meta_arch", ["MGN", "HAA"])
def test_multi_branch_teachers_start_every_trunk_copy_from_the_file(tmp_path, meta_arch):
    path = tmp_path / "resnet18.pth"
    state = torchvision_resnet18_state()
    torch.save(state, path)
    cfg = cfg_with("MODEL.META_ARCHITECTURE", meta_arch, "MODEL.BACKBONE.PRETRAIN", "True",
                   "MODEL.BACKBONE.PRETRAIN_PATH", str(path), "MODEL.HAA.STRIPE_DIM", "16")
    model = build_model(cfg, pretrained=True)
    own = model.state_dict()
    if meta_arch == "MGN":  # the trunk is a Sequential; every branch has its own copy of layer4
        copies = {"backbone.0.weight": "conv1.weight", "b1.1.0.conv1.weight": "layer4.0.conv1.weight",
                  "b3.1.1.conv2.weight": "layer4.1.conv2.weight"}
    else:
        copies = {"backbone.conv1.weight": "conv1.weight", "hs_backbone.conv1.weight": "conv1.weight",
                  "hs_backbone.layer4.1.conv2.weight": "layer4.1.conv2.weight"}
    for ours, theirs in copies.items():
        assert torch.equal(own[ours], state[theirs]), ours
    assert not torch.equal(build_model(cfg).state_dict()[next(iter(copies))], own[next(iter(copies))])
