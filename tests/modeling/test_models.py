"""The model contract (output types, feature taps, fast-reid parameter names) and checkpoint save/load."""

from dataclasses import dataclass

import pytest
import torch
from torch import nn
from torchvision.models.resnet import BasicBlock, Bottleneck

from compressreid.checkpoint import LoadReport, load_checkpoint, read_checkpoint, save_checkpoint
from compressreid.config import get_cfg
from compressreid.errors import CheckpointError, ConfigError
from compressreid.modeling import BranchOutput, FeatureInfo, ModelOutput, build_model
from compressreid.modeling.heads import EmbeddingHead
from compressreid.modeling.meta_arch.baseline import Baseline

H, W = 64, 32


def r18_cfg(**heads):
    cfg = get_cfg()
    cfg.MODEL.BACKBONE.DEPTH = "18x"
    cfg.MODEL.BACKBONE.FEAT_DIM = 512
    for key, value in heads.items():
        cfg.MODEL.HEADS[key] = value
    return cfg


def build(cfg, num_classes=None, seed=0):
    torch.manual_seed(seed)
    return build_model(cfg, num_classes)


def images(batch=4, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(batch, 3, H, W, generator=generator) * 255.0


@pytest.fixture(scope="module")
def r18():
    return build(r18_cfg(), num_classes=5)


@pytest.fixture(scope="module")
def r50_everything():
    """The one large build: ResNet-50 with IBN-a, non-local blocks, learned-p GeM and CircleSoftmax."""
    cfg = get_cfg()
    cfg.MODEL.BACKBONE.WITH_IBN = True
    cfg.MODEL.BACKBONE.WITH_NL = True
    cfg.MODEL.HEADS.POOL_LAYER = "GeneralizedMeanPoolingP"
    cfg.MODEL.HEADS.CLS_LAYER = "CircleSoftmax"
    cfg.MODEL.HEADS.SCALE = 64
    cfg.MODEL.HEADS.MARGIN = 0.35
    return build(cfg, num_classes=7)


# -- output contract --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("training", [False, True])
def test_forward_returns_embedding_tensor_in_both_modes(r18, training):
    r18.train(training)
    out = r18(images())
    assert type(out) is torch.Tensor  # never a dict, whatever self.training says
    assert out.shape == (4, r18.embedding_dim) == (4, 512)
    assert out.dtype == torch.float32
    assert torch.isfinite(out).all()


def test_forward_train_returns_model_output(r18):
    r18.train()
    targets = torch.tensor([0, 1, 2, 4])
    output = r18.forward_train(images(), targets)
    assert isinstance(output, ModelOutput)
    assert output.embedding.shape == (4, 512)
    (branch,) = output.branches
    assert isinstance(branch, BranchOutput)
    assert branch.logits.shape == (4, 5)
    assert branch.cls_logits.shape == (4, 5)
    assert branch.feature.shape == (4, 512)
    assert torch.equal(branch.embedding, output.embedding)


def test_eval_embedding_is_post_bnneck_and_neck_feat_before_is_pooled():
    model = build(r18_cfg(NECK_FEAT="before"), num_classes=3).eval()
    model.heads.bottleneck[0].running_mean.fill_(0.5)  # fresh statistics would make the BNNeck an identity
    x = images(2)
    with torch.no_grad():
        output = model.forward_train(x)
        pooled = model.heads.pool_layer(model.backbone(model.preprocess(x))).flatten(1)
        embedding = model(x)
    assert torch.allclose(output.branches[0].feature, pooled)
    assert torch.allclose(output.embedding, embedding)
    assert not torch.allclose(embedding, pooled)  # the BNNeck changed it


def test_zero_classes_means_no_classifier():
    model = build(r18_cfg(), num_classes=0)
    assert "heads.weight" not in model.state_dict()
    output = model.train().forward_train(images(2), torch.tensor([0, 1]))
    branch = output.branches[0]
    assert branch.logits is None and branch.cls_logits is None
    assert branch.embedding.shape == (2, 512)


def test_num_classes_defaults_to_config():
    cfg = r18_cfg()
    cfg.MODEL.HEADS.NUM_CLASSES = 9
    assert build(cfg).heads.weight.shape == (9, 512)


def test_input_tensor_is_not_modified(r18):
    x = images(3)
    before = x.clone()
    r18.eval()
    r18(x)
    r18.train()
    r18(x)
    r18.forward_train(x, torch.tensor([0, 1, 2]))
    assert torch.equal(x, before)


def test_normalisation_happens_inside_the_model(r18):
    r18.eval()
    x = images(2)
    with torch.no_grad():
        expected = r18.heads(r18.backbone((x - torch.tensor([123.675, 116.28, 103.53]).view(1, 3, 1, 1))
                                          / torch.tensor([58.395, 57.12, 57.375]).view(1, 3, 1, 1)))
        assert torch.allclose(r18(x), expected, atol=1e-5)


def test_big_build_contract(r50_everything):
    model = r50_everything
    x = images(2)
    before = x.clone()
    model.eval()
    out = model(x)
    assert type(out) is torch.Tensor and out.shape == (2, 2048)
    model.train()
    assert type(model(x)) is torch.Tensor
    output = model.forward_train(x, torch.tensor([0, 6]))
    branch = output.branches[0]
    assert branch.logits.shape == (2, 7)
    assert branch.cls_logits.abs().max() <= 64 + 1e-3  # cosine logits scaled by SCALE
    assert torch.equal(x, before)


# -- feature taps -----------------------------------------------------------------------------------------------


def stage_outputs(model, x):
    """Record each stage's output by hooking the last block of the stage (no non-local blocks in R18)."""
    shapes = {}
    handles = [
        model.get_submodule(info.module)[-1].register_forward_hook(
            lambda module, inputs, output, name=info.module: shapes.__setitem__(name, tuple(output.shape))
        )
        for info in model.feature_info
    ]
    try:
        with torch.no_grad():
            model.eval()(x)
    finally:
        for handle in handles:
            handle.remove()
    return shapes


def assert_stride(declared, size, mapped):
    # fast-reid's stem max-pool uses ceil_mode, which adds one row/column that then propagates.
    assert size / declared <= mapped <= size / declared + 1, (declared, size, mapped)


@pytest.mark.parametrize("last_stride, size", [(1, (64, 32)), (2, (64, 32)), (2, (128, 64))])
def test_feature_info_matches_real_shapes(last_stride, size):
    cfg = r18_cfg()
    cfg.MODEL.BACKBONE.LAST_STRIDE = last_stride
    model = build(cfg, 0)
    x = torch.rand(1, 3, *size) * 255
    shapes = stage_outputs(model, x)
    assert [f.module for f in model.feature_info] == [f"backbone.layer{i}" for i in range(1, 5)]
    assert model.feature_info[-1].stride == 16 * last_stride
    for info in model.feature_info:
        _, channels, height, width = shapes[info.module]
        assert channels == info.channels
        assert_stride(info.stride, size[0], height)
        assert_stride(info.stride, size[1], width)
    assert model.feature_info[-1].channels == model.backbone.out_channels == 512


def test_forward_hooks_on_feature_info_paths_fire():
    model = build(r18_cfg(), 0).eval()
    shapes = {}
    for info in model.feature_info:
        model.get_submodule(info.module).register_forward_hook(
            lambda module, inputs, output, name=info.module: shapes.__setitem__(name, tuple(output.shape))
        )
    with torch.no_grad():
        model(images(1))
    assert set(shapes) == {info.module for info in model.feature_info}
    for info in model.feature_info:
        assert shapes[info.module][1] == info.channels
        assert_stride(info.stride, H, shapes[info.module][2])


def test_feature_info_of_resnet50(r50_everything):
    assert [(f.channels, f.stride) for f in r50_everything.feature_info] == [
        (256, 4), (512, 8), (1024, 16), (2048, 16)]
    for info in r50_everything.feature_info:
        r50_everything.get_submodule(info.module)  # every declared path exists


# -- parameter names --------------------------------------------------------------------------------------------


def test_state_dict_follows_fastreid_v1_names(r50_everything):
    keys = set(r50_everything.state_dict())
    for key in [
        "backbone.conv1.weight",
        "backbone.bn1.running_mean",
        "backbone.layer1.0.bn1.IN.weight",
        "backbone.layer1.0.bn1.BN.running_var",
        "backbone.layer3.5.bn1.IN.bias",
        "backbone.layer4.0.bn1.weight",  # no IBN in the last stage
        "backbone.layer1.0.downsample.0.weight",
        "backbone.NL_2.0.g.weight",
        "backbone.NL_2.1.W.1.weight",
        "backbone.NL_3.2.theta.weight",
        "backbone.NL_3.2.phi.bias",
        "heads.pool_layer.p",
        "heads.bottleneck.0.weight",
        "heads.bottleneck.0.running_mean",
        "heads.weight",
    ]:
        assert key in keys, key
    assert "backbone.layer4.0.bn1.IN.weight" not in keys
    assert not any(k.startswith(("backbone.NL_1.", "backbone.NL_4.", "backbone.NL_2.2")) for k in keys)
    assert not any("pixel_mean" in k or "pixel_std" in k or k.startswith("preprocess") for k in keys)
    assert r50_everything.state_dict()["heads.weight"].shape == (7, 2048)


def test_resnet18_names_without_ibn(r18):
    keys = set(r18.state_dict())
    assert {"backbone.conv1.weight", "backbone.layer1.0.bn1.weight", "backbone.layer4.1.conv2.weight",
            "heads.bottleneck.0.weight", "heads.weight"} <= keys
    assert not any(".IN." in k or "NL_" in k for k in keys)
    assert not any("pixel" in k for k in keys)


def test_bnneck_bias_is_frozen(r18):
    assert r18.heads.bottleneck[0].bias.requires_grad is False
    assert r18.heads.bottleneck[0].weight.requires_grad is True


# -- registry and config errors ---------------------------------------------------------------------------------


@pytest.mark.parametrize("depth", ["18x", "50x"])
def test_zero_init_residual_starts_every_block_as_the_identity(depth):
    from compressreid.modeling.backbones.resnet import ResNetBackbone

    torch.manual_seed(0)
    trunk = ResNetBackbone(depth, width=0.125, with_ibn=True, zero_init_residual=True).eval()
    blocks = [m for m in trunk.modules() if isinstance(m, (BasicBlock, Bottleneck))]
    x = torch.randn(2, trunk.layer2[1].conv1.in_channels, 8, 4)
    assert torch.equal(trunk.layer2[1](x), torch.relu(x))  # no downsample: the block is ReLU(x + 0)
    assert blocks and all(not (b.bn3 if isinstance(b, Bottleneck) else b.bn2).weight.any() for b in blocks)
    default = ResNetBackbone(depth, width=0.125)
    assert not torch.equal(default.layer2[1](x), torch.relu(x))


def test_unknown_backbone_lists_valid_names():
    cfg = r18_cfg()
    cfg.MODEL.BACKBONE.NAME = "build_resnt_backbone"
    with pytest.raises(KeyError, match=r"build_resnt_backbone.*valid names:.*build_resnet_backbone"):
        build_model(cfg, 0)


def test_unknown_meta_architecture_lists_valid_names():
    cfg = r18_cfg()
    cfg.MODEL.META_ARCHITECTURE = "Baselin"
    with pytest.raises(KeyError, match=r"Baselin.*valid names:.*Baseline"):
        build_model(cfg, 0)


@pytest.mark.parametrize(
    "section, key, value, pattern",
    [
        ("BACKBONE", "DEPTH", "77x", "DEPTH '77x'"),
        ("BACKBONE", "NORM", "GN", "norm 'GN'"),
        ("HEADS", "POOL_LAYER", "avgpool", "POOL_LAYER 'avgpool'"),
        ("HEADS", "CLS_LAYER", "circle", "CLS_LAYER 'circle'"),
        ("HEADS", "NECK_FEAT", "middle", "NECK_FEAT 'middle'"),
    ],
)
def test_bad_model_config_is_a_config_error(section, key, value, pattern):
    cfg = r18_cfg()
    cfg.MODEL[section][key] = value
    with pytest.raises(ConfigError, match=pattern):
        build_model(cfg, 0)


# -- checkpoints ------------------------------------------------------------------------------------------------


class TinyBackbone(nn.Module):
    """A two-stage ResNet with fast-reid's parameter names, so checkpoint tests stay fast."""

    out_channels = 16

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, stride=2, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(8)
        self.layer1 = nn.Sequential(BasicBlock(8, 8))
        down = nn.Sequential(nn.Conv2d(8, 16, 1, stride=2, bias=False), nn.BatchNorm2d(16))
        self.layer2 = nn.Sequential(BasicBlock(8, 16, stride=2, downsample=down))
        self.feature_info = [FeatureInfo("layer1", 8, 2), FeatureInfo("layer2", 16, 4)]

    def forward(self, x):
        return self.layer2(self.layer1(torch.relu(self.bn1(self.conv1(x)))))


def small(num_classes, seed=0):
    torch.manual_seed(seed)
    return Baseline(TinyBackbone(), EmbeddingHead(16, num_classes), [123.675, 116.28, 103.53], [58.395, 57.12, 57.375])


@dataclass
class TrainerState:
    """Stands in for an arbitrary pickled object inside an untrusted checkpoint."""

    epoch: int


def assert_same_state(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    assert list(sa) == list(sb)
    for key in sa:
        assert torch.equal(sa[key], sb[key]), key


def test_save_then_load_round_trips_exactly(tmp_path):
    source = small(5, seed=1)
    source.train()(images(4))  # move BN running statistics off their initial values
    path = save_checkpoint(str(tmp_path / "ckpt" / "model.pth"), source, epoch=3, iteration=120)
    target = small(5, seed=2)
    report = load_checkpoint(target, path)
    assert report == LoadReport()
    assert_same_state(source, target)
    source.eval(), target.eval()
    with torch.no_grad():
        assert torch.equal(source(images(2)), target(images(2)))
    data = read_checkpoint(path)
    assert data["epoch"] == 3 and data["iteration"] == 120
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == ["model.pth"]  # no temporary left


def test_pickled_custom_object_is_refused_without_opt_in(tmp_path):
    path = str(tmp_path / "unsafe.pth")
    model = small(0)
    torch.save({"model": model.state_dict(), "trainer": TrainerState(4)}, path)
    with pytest.raises(CheckpointError, match="allow_unsafe") as info:
        load_checkpoint(small(0, seed=3), path)
    assert "unsafe.pth" in str(info.value)
    target = small(0, seed=3)
    assert load_checkpoint(target, path, allow_unsafe=True) == LoadReport()
    assert_same_state(model, target)
    assert read_checkpoint(path, allow_unsafe=True)["trainer"] == TrainerState(4)


def test_missing_checkpoint_is_a_checkpoint_error(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(small(0), str(tmp_path / "nope.pth"))


def test_garbage_checkpoint_is_a_checkpoint_error(tmp_path):
    path = tmp_path / "garbage.pth"
    path.write_bytes(b"not a torch file at all")
    with pytest.raises(CheckpointError, match="garbage.pth"):
        load_checkpoint(small(0), str(path))


def test_non_dict_checkpoint_is_a_checkpoint_error(tmp_path):
    path = str(tmp_path / "list.pth")
    torch.save([torch.zeros(1)], path)
    with pytest.raises(CheckpointError, match="expected a dict"):
        read_checkpoint(path)


def test_shape_mismatch_names_the_key(tmp_path):
    state = small(0).state_dict()
    state["backbone.layer2.0.conv1.weight"] = torch.zeros(8, 8, 3, 3)
    path = str(tmp_path / "bad_shape.pth")
    torch.save({"model": state}, path)
    target = small(0, seed=5)
    before = {k: v.clone() for k, v in target.state_dict().items()}
    with pytest.raises(CheckpointError, match=r"backbone\.layer2\.0\.conv1\.weight.*\(8, 8, 3, 3\).*\(16, 8, 3, 3\)"):
        load_checkpoint(target, path)
    for key, value in target.state_dict().items():  # a refused load leaves the model untouched
        assert torch.equal(value, before[key]), key


def test_classifier_of_another_size_is_skipped_and_reported(tmp_path):
    source = small(751, seed=1)
    path = save_checkpoint(str(tmp_path / "market.pth"), source)
    target = small(5, seed=2)
    own_classifier = target.heads.weight.detach().clone()
    report = load_checkpoint(target, path)
    assert report.skipped == ["heads.weight"]
    assert report.missing == [] and report.unexpected == []
    assert torch.equal(target.heads.weight, own_classifier)
    assert torch.equal(target.backbone.conv1.weight, source.backbone.conv1.weight)


def test_classifier_into_a_model_without_one_is_skipped(tmp_path):
    path = save_checkpoint(str(tmp_path / "with_cls.pth"), small(5))
    report = load_checkpoint(small(0), path)
    assert report.skipped == ["heads.weight"] and report.unexpected == [] and report.missing == []


def test_missing_and_unexpected_keys_are_reported(tmp_path):
    source = small(0, seed=1)
    state = dict(source.state_dict())
    del state["backbone.layer2.0.bn2.running_var"]
    state["heads.extra.weight"] = torch.zeros(3)
    state["backbone.fc.bias"] = torch.zeros(3)
    path = str(tmp_path / "partial.pth")
    torch.save({"model": state}, path)
    target = small(0, seed=2)
    report = load_checkpoint(target, path)
    assert report.missing == ["backbone.layer2.0.bn2.running_var"]
    assert report.unexpected == ["heads.extra.weight", "backbone.fc.bias"]
    assert report.skipped == []
    assert torch.equal(target.backbone.conv1.weight, source.backbone.conv1.weight)  # the rest transferred


def test_bare_state_dict_loads_like_a_checkpoint(tmp_path):
    source = small(0, seed=1)
    path = str(tmp_path / "bare.pth")
    torch.save(source.state_dict(), path)
    target = small(0, seed=2)
    assert load_checkpoint(target, path) == LoadReport()
    assert_same_state(source, target)


def test_fastreid_style_checkpoint_loads_into_resnet50_ibn(tmp_path, r50_everything):
    """A fast-reid v1 checkpoint is {"model": state_dict, "optimizer": ..., "iteration": ...} with the same names."""
    original = {k: v.clone() for k, v in r50_everything.state_dict().items()}
    state = {k: v + (1.0 if v.is_floating_point() else 0) for k, v in original.items()}
    path = str(tmp_path / "model_final.pth")
    torch.save({"model": state, "optimizer": {"state": {}, "param_groups": []}, "iteration": 7}, path)
    try:
        report = load_checkpoint(r50_everything, path)
        assert report == LoadReport()
        loaded = r50_everything.state_dict()
        assert torch.equal(loaded["backbone.NL_2.0.g.weight"], state["backbone.NL_2.0.g.weight"])
        assert torch.equal(loaded["backbone.layer1.0.bn1.IN.weight"], state["backbone.layer1.0.bn1.IN.weight"])
        assert torch.equal(r50_everything.heads.pool_layer.p.detach(), state["heads.pool_layer.p"])
    finally:
        r50_everything.load_state_dict(original)  # the fixture is shared by the module
