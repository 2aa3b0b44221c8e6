"""OSNet / OSNet-IBN / OSNet-AIN and MobileNetV3 students: published sizes, IN placement, local weight loading."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from compressreid.config import get_cfg
from compressreid.errors import CheckpointError, ConfigError
from compressreid.modeling import BACKBONES, build_model
from compressreid.students.osnet import OSNetBackbone, osnet_key_map, scaled_channels
from compressreid.students.osnet_blocks import ChannelGate, OSBlock


def backbone_cfg(name: str, **keys):
    cfg = get_cfg()
    cfg.MODEL.BACKBONE.NAME = name
    for key, value in keys.items():
        cfg.MODEL.BACKBONE[key] = value
    return cfg


def count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.mark.parametrize("width, channels, paper_millions", [
    (1.0, [64, 256, 384, 512], 2.2), (0.75, [48, 192, 288, 384], 1.3),
    (0.5, [32, 128, 192, 256], 0.6), (0.25, [16, 64, 96, 128], 0.2)])
def test_published_widths_and_parameter_counts(width, channels, paper_millions):
    assert scaled_channels(width) == channels
    backbone = BACKBONES.get("osnet")(backbone_cfg("osnet", WIDTH=width))
    # the paper counts the 512-d fc + BN1d after pooling, which a ReID head replaces
    fc = channels[-1] * 512 + 512 + 2 * 512
    assert abs((count(backbone) + fc) / 1e6 - paper_millions) < 0.05


def test_os_block_has_four_scales_sharing_one_gate():
    block = OSBlock(64, 256)
    assert [len(stream.layers) for stream in block.conv2] == [1, 2, 3, 4]
    assert sum(isinstance(m, ChannelGate) for m in block.modules()) == 1
    lite = block.conv2[3].layers[0]
    assert lite.conv1.kernel_size == (1, 1) and lite.conv2.groups == lite.conv2.out_channels == 64
    calls = []
    block.gate.register_forward_hook(lambda *_: calls.append(1))
    block(torch.randn(1, 64, 8, 4))
    assert len(calls) == 4  # the unified gate weighs every stream


def _instance_norms(backbone: OSNetBackbone):
    return sorted(name for name, m in backbone.named_modules() if isinstance(m, nn.InstanceNorm2d))


def test_instance_norm_placement_per_variant():
    plain = BACKBONES.get("osnet")(backbone_cfg("osnet", WIDTH=0.25))
    ibn = BACKBONES.get("osnet")(backbone_cfg("osnet", WIDTH=0.25, WITH_IBN=True))
    ain = BACKBONES.get("osnet_ain")(backbone_cfg("osnet_ain", WIDTH=0.25))
    assert _instance_norms(plain) == []
    assert _instance_norms(ibn) == ["conv1.bn", "conv2.0.IN", "conv2.1.IN"]
    assert _instance_norms(ain) == ["conv1.bn", "conv2.0.IN", "conv2.1.IN", "conv3.1.IN", "conv4.0.IN"]
    # AIN's IN closes the residual branch in place of its BN; IBN's sits after the sum
    assert isinstance(ain.conv2[0].conv3.bn, nn.Identity)
    assert isinstance(ibn.conv2[0].conv3.bn, nn.BatchNorm2d)


def test_ibn_output_norm_applies_after_the_residual_sum():
    block = OSBlock(16, 16, instance_norm_at="output").eval()
    with torch.no_grad():
        out = block(torch.randn(2, 16, 6, 4) * 5 + 3)
    # IN (identity affine) then ReLU: every channel of every sample has per-map mean of relu(N(0,1)) ~ 0.4
    assert out.mean(dim=(2, 3)).max() < 1.0


def test_stem_maxpool_keeps_padding_as_published():
    backbone = OSNetBackbone(0.25)
    assert (backbone.maxpool.kernel_size, backbone.maxpool.stride, backbone.maxpool.padding) == (3, 2, 1)


@pytest.mark.parametrize("keys, message", [
    ({"WIDTH": 0.0}, "WIDTH"), ({"LAST_STRIDE": 2}, "LAST_STRIDE"), ({"WITH_NL": True}, "WITH_NL")])
def test_osnet_rejects_unsupported_settings(keys, message):
    with pytest.raises(ConfigError, match=message):
        BACKBONES.get("osnet")(backbone_cfg("osnet", **keys))


def test_osnet_ain_rejects_with_ibn():
    with pytest.raises(ConfigError, match="WITH_IBN"):
        BACKBONES.get("osnet_ain")(backbone_cfg("osnet_ain", WITH_IBN=True))


# -- local weight files -------------------------------------------------------------------------------------------


def _to_iccv_names(state):
    """Rename our keys to the ICCV'19 reference layout (conv2a..conv2d streams, transitions inside stages)."""
    renamed = {}
    for key, value in state.items():
        parts = key.split(".")
        if len(parts) > 4 and parts[2] == "conv2" and parts[4] == "layers":
            stream, layer = int(parts[3]), parts[5]
            letter = "abcd"[stream]
            middle = f"conv2{letter}" if stream == 0 else f"conv2{letter}.{layer}"
            key = ".".join(parts[:2] + [middle] + parts[6:])
        elif parts[0] in ("pool2", "pool3"):
            key = ".".join([f"conv{parts[0][-1]}", "2"] + parts[1:])
        renamed[key] = value
    return renamed


def test_key_map_matches_reference_names():
    assert osnet_key_map("conv2.0.conv2a.conv1.weight") == "conv2.0.conv2.0.layers.0.conv1.weight"
    assert osnet_key_map("conv3.1.conv2c.2.bn.running_var") == "conv3.1.conv2.2.layers.2.bn.running_var"
    assert osnet_key_map("conv2.2.0.conv.weight") == "pool2.0.conv.weight"
    assert osnet_key_map("conv2.0.conv2.3.layers.3.conv2.weight") == "conv2.0.conv2.3.layers.3.conv2.weight"
    assert osnet_key_map("conv2.0.gate.fc1.bias") == "conv2.0.gate.fc1.bias"
    assert osnet_key_map("fc.0.weight") is None and osnet_key_map("classifier.bias") is None


@pytest.mark.parametrize("name, ibn", [("osnet", False), ("osnet", True), ("osnet_ain", False)])
def test_pretrained_file_loads_every_tensor(name, ibn, tmp_path):
    torch.manual_seed(1)
    source = BACKBONES.get(name)(backbone_cfg(name, WIDTH=0.25, WITH_IBN=ibn))
    state = source.state_dict()
    if name == "osnet":
        state = _to_iccv_names(state)  # ICCV'19 files use the older names
    state = {f"module.{k}": v for k, v in state.items()}  # saved from DataParallel
    state["classifier.weight"] = torch.zeros(10, 128)
    path = tmp_path / "imagenet.pth"
    torch.save(state, path)
    model = build_model(backbone_cfg(name, WIDTH=0.25, WITH_IBN=ibn, PRETRAIN=True, PRETRAIN_PATH=str(path)), pretrained=True)
    for key, value in source.state_dict().items():
        assert torch.equal(model.backbone.state_dict()[key], value), key


def test_pretrained_missing_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="PRETRAIN_PATH"):
        build_model(backbone_cfg("osnet", WIDTH=0.25, PRETRAIN=True, PRETRAIN_PATH=str(tmp_path / "nope.pth")), pretrained=True)


def test_pretrained_file_of_another_width_is_refused(tmp_path):
    path = tmp_path / "x0_5.pth"
    torch.save(OSNetBackbone(0.5).state_dict(), path)
    with pytest.raises(CheckpointError, match="shape mismatch"):
        build_model(backbone_cfg("osnet", WIDTH=0.25, PRETRAIN=True, PRETRAIN_PATH=str(path)), pretrained=True)


def test_pretrained_file_of_another_family_is_refused(tmp_path):
    path = tmp_path / "other.pth"
    torch.save({"layer1.0.conv1.weight": torch.zeros(1)}, path)
    with pytest.raises(CheckpointError, match="no key matched"):
        build_model(backbone_cfg("osnet", WIDTH=0.25, PRETRAIN=True, PRETRAIN_PATH=str(path)), pretrained=True)


def test_mobilenetv3_loads_torchvision_format_and_drops_classifier(tmp_path):
    from torchvision.models import mobilenet_v3_small

    torch.manual_seed(2)
    reference = mobilenet_v3_small(weights=None, width_mult=0.5)
    path = tmp_path / "mnv3.pth"
    torch.save(reference.state_dict(), path)
    # LAST_STRIDE 2 keeps torchvision's geometry; dilation has no parameters, so 1 loads the same file
    model = build_model(backbone_cfg("mobilenetv3_small", WIDTH=0.5, LAST_STRIDE=1, PRETRAIN=True, PRETRAIN_PATH=str(path)), pretrained=True)
    for key, value in reference.features.state_dict().items():
        assert torch.equal(model.backbone.features.state_dict()[key], value), key


@pytest.mark.parametrize("last_stride, final_stride", [(1, 16), (2, 32)])
def test_mobilenetv3_last_stride(last_stride, final_stride):
    backbone = BACKBONES.get("mobilenetv3_small")(backbone_cfg("mobilenetv3_small", WIDTH=0.5, LAST_STRIDE=last_stride))
    assert backbone.feature_info[-1].stride == final_stride
    assert backbone(torch.rand(1, 3, 64, 32)).shape[-2:] == (64 // final_stride, 32 // final_stride)
