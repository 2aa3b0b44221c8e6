"""MGN teacher: output contract, fast-reid 1.4.0 parameter names, feature taps and which losses see which branch."""

import pytest
import torch
import torch.nn.functional as F

from compressreid.config import get_cfg
from compressreid.errors import ConfigError
from compressreid.modeling import BranchOutput, ModelOutput, build_model
from compressreid.modeling.losses import build_criterion
from compressreid.modeling.losses.metric_losses import CircleLoss, Cosface, TripletLoss
from compressreid.modeling.meta_arch import META_ARCHITECTURES
from compressreid.teachers.mgn import MGN, split_stripes

H, W = 64, 32
DIM = 16  # per-head embedding
CLASSES = 5
# fast-reid's eval concatenation order, written out so that a reordering in the model is caught
FASTREID_ORDER = ["b1_head", "b2_head", "b3_head", "b21_head", "b22_head", "b31_head", "b32_head", "b33_head"]


def mgn_cfg(depth="50x", last_stride=1, with_ibn=True, width=0.125):
    cfg = get_cfg()
    cfg.MODEL.META_ARCHITECTURE = "MGN"
    cfg.MODEL.BACKBONE.DEPTH = depth
    cfg.MODEL.BACKBONE.WITH_IBN = with_ibn
    cfg.MODEL.BACKBONE.LAST_STRIDE = last_stride
    cfg.MODEL.BACKBONE.WIDTH = width
    cfg.MODEL.HEADS.EMBEDDING_DIM = DIM
    cfg.MODEL.LOSSES.NAME = ("CrossEntropyLoss", "TripletLoss")
    return cfg


def build(cfg, num_classes=CLASSES, seed=0):
    torch.manual_seed(seed)
    return build_model(cfg, num_classes)


def images(batch=4, seed=0):
    return torch.rand(batch, 3, H, W, generator=torch.Generator().manual_seed(seed)) * 255.0


@pytest.fixture(scope="module")
def mgn():
    return build(mgn_cfg())


def test_registered_and_sized(mgn):
    assert META_ARCHITECTURES.get("MGN") is MGN
    assert isinstance(mgn, MGN)
    assert mgn.embedding_dim == 8 * DIM


@pytest.mark.parametrize("training", [False, True])
def test_forward_returns_concatenated_embedding(mgn, training):
    mgn.train(training)
    out = mgn(images())
    assert type(out) is torch.Tensor
    assert out.shape == (4, 8 * DIM)
    assert torch.isfinite(out).all()


def test_forward_train_has_one_branch_per_head(mgn):
    mgn.train()
    targets = torch.tensor([0, 1, 2, 3])
    out = mgn.forward_train(images(), targets)
    assert isinstance(out, ModelOutput) and out.aux == {}
    assert len(out.branches) == 8
    for branch in out.branches:
        assert isinstance(branch, BranchOutput)
        assert branch.embedding.shape == (4, DIM)
        assert branch.logits.shape == branch.cls_logits.shape == (4, CLASSES)
    assert torch.equal(out.embedding, torch.cat([b.embedding for b in out.branches], dim=1))


def test_eval_embedding_follows_fastreid_order(mgn):
    mgn.eval()
    x = images(2)
    with torch.no_grad():
        shared = mgn.backbone(mgn.preprocess(x))
        g1, g2, g3 = mgn.b1(shared), mgn.b2(shared), mgn.b3(shared)
        (b21, b22), (b31, b32, b33) = split_stripes(g2, 2), split_stripes(g3, 3)
        assert torch.equal(torch.cat([b31, b32, b33], dim=2), g3)  # top to bottom, nothing dropped
        inputs = {"b1_head": g1, "b2_head": g2, "b3_head": g3, "b21_head": b21, "b22_head": b22,
                  "b31_head": b31, "b32_head": b32, "b33_head": b33}
        expected = torch.cat([getattr(mgn, name)(inputs[name]) for name in FASTREID_ORDER], dim=1)
        assert torch.allclose(mgn(x), expected, atol=1e-6)


def test_split_stripes_equals_chunk_where_fastreid_works():
    x = torch.arange(16.0).view(1, 1, 16, 1)
    assert [s.shape[2] for s in split_stripes(x, 3)] == [6, 6, 4]  # torch.chunk's sizes
    assert [s.shape[2] for s in split_stripes(x, 2)] == [8, 8]
    small = torch.arange(4.0).view(1, 1, 4, 1)
    stripes = split_stripes(small, 3)
    assert [s.shape[2] for s in stripes] == [2, 1, 1]
    assert torch.equal(torch.cat(stripes, dim=2), small)
    with pytest.raises(ConfigError, match="feature rows"):
        split_stripes(torch.zeros(1, 1, 2, 1), 3)


def test_state_dict_uses_fastreid_mgn_names(mgn):
    keys = set(mgn.state_dict())
    for key in [
        "backbone.0.weight",  # stem conv1 inside fast-reid's nn.Sequential trunk
        "backbone.1.running_var",  # stem bn1
        "backbone.4.0.bn1.IN.weight",  # layer1, IBN-a
        "backbone.5.3.conv3.weight",  # layer2
        "backbone.6.downsample.0.weight",  # layer3[0]
        "b1.0.0.conv1.weight",  # layer3[1:] renumbered from 0
        "b1.0.4.bn1.BN.running_mean",
        "b1.1.0.downsample.1.weight",  # layer4
        "b2.1.2.bn3.bias",
        "b3.0.4.conv3.weight",
        "b3.1.0.downsample.0.weight",
        "b21_head.bottleneck.0.weight",  # 1x1 reduction to EMBEDDING_DIM
        "b21_head.bottleneck.1.running_mean",  # BNNeck
        "b1_head.weight",  # classifier
        "b33_head.weight",
    ]:
        assert key in keys, key
    assert "b3.0.5.conv1.weight" not in keys  # ResNet-50's layer3 has 6 blocks, the first is in the trunk
    prefixes = {key.split(".")[0] for key in keys}
    assert prefixes == {"backbone", "b1", "b2", "b3", *FASTREID_ORDER}
    assert mgn.state_dict()["b21_head.bottleneck.0.weight"].shape == (DIM, 256, 1, 1)


def test_branches_start_from_the_same_weights():
    model = build(mgn_cfg(last_stride=2), num_classes=0)
    b1, b2, b3 = (model.get_submodule(name).state_dict() for name in ("b1", "b2", "b3"))
    assert b1.keys() == b2.keys() == b3.keys()
    for key in b1:
        assert torch.equal(b1[key], b2[key]) and torch.equal(b1[key], b3[key]), key
    strides = {name: model.get_submodule(f"{name}.1.0.downsample.0").stride for name in ("b1", "b2", "b3")}
    assert strides == {"b1": (2, 2), "b2": (1, 1), "b3": (1, 1)}


def assert_stride(declared, size, mapped):
    # the stem max-pool uses ceil_mode, which may add one row/column that then propagates
    assert size / declared <= mapped <= size / declared + 1, (declared, size, mapped)


@pytest.mark.parametrize("depth, last_stride", [("50x", 1), ("50x", 2), ("18x", 2)])
def test_feature_info_matches_hooked_shapes(depth, last_stride):
    model = build(mgn_cfg(depth=depth, last_stride=last_stride), num_classes=0).eval()
    assert [f.module for f in model.feature_info] == [
        "backbone.4", "backbone.5", "backbone.6", "b1", "b2", "b3"]
    assert [f.stride for f in model.feature_info] == [4, 8, 16, 16 * last_stride, 16, 16]
    shapes = {}
    for info in model.feature_info:
        model.get_submodule(info.module).register_forward_hook(
            lambda module, inputs, output, name=info.module: shapes.__setitem__(name, tuple(output.shape)))
    with torch.no_grad():
        model(images(1))
    assert set(shapes) == {info.module for info in model.feature_info}
    for info in model.feature_info:
        _, channels, height, width = shapes[info.module]
        assert channels == info.channels, info
        assert_stride(info.stride, H, height)
        assert_stride(info.stride, W, width)


def test_eval_is_deterministic_and_independent_of_batch(mgn):
    mgn.eval()
    x = images(3, seed=1)
    with torch.no_grad():
        alone = mgn(x[:1])
        again = mgn(x[:1])
        in_batch = mgn(torch.cat([x[:1], images(5, seed=2)]))
    assert torch.equal(alone, again)
    assert torch.allclose(alone, in_batch[:1], atol=1e-5)


def test_metric_losses_see_the_features_fastreid_uses(mgn):
    mgn.train()
    torch.manual_seed(0)
    targets = torch.tensor([0, 0, 1, 1, 2, 2])
    out = mgn.forward_train(images(6, seed=3), targets)
    assert [b.metric_loss for b in out.branches] == [True, True, True, True, False, True, False, False]
    b1, b2, b3, b21, b22, b31, b32, b33 = out.branches
    assert b21.feature.shape == (6, 2 * DIM) and b31.feature.shape == (6, 3 * DIM)  # stripe groups

    criterion = build_criterion(mgn_cfg())
    terms = criterion(out, targets)
    triplet = TripletLoss(0.3)
    # fast-reid: triplet on the three globals and on cat(b21, b22), cat(b31, b32, b33)
    groups = [b1.embedding, b2.embedding, b3.embedding,
              torch.cat([b21.embedding, b22.embedding], 1), torch.cat([b31.embedding, b32.embedding, b33.embedding], 1)]
    expected = sum(triplet(BranchOutput(g, g), targets) for g in groups)  # NECK_FEAT after: feature = embedding
    assert torch.allclose(terms["TripletLoss"], expected, atol=1e-5)
    # cross-entropy on all eight heads
    expected_ce = sum(F.cross_entropy(b.logits, targets, label_smoothing=0.1) for b in out.branches)
    assert torch.allclose(terms["CrossEntropyLoss"], expected_ce, atol=1e-5)


@pytest.mark.parametrize("loss", [TripletLoss(0.3), CircleLoss(0.25, 128, 1.0), Cosface(0.25, 128, 1.0)])
def test_metric_losses_skip_branches_that_opt_out(loss):
    feature = torch.randn(4, 8, requires_grad=True)
    targets = torch.tensor([0, 0, 1, 1])
    assert loss(BranchOutput(feature, feature), targets) > 0
    skipped = loss(BranchOutput(feature, feature, metric_loss=False), targets)
    assert skipped.shape == () and skipped.item() == 0.0


def test_builds_without_classes_for_inference():
    model = build(mgn_cfg(width=0.25), num_classes=0)
    assert not any(key.endswith("head.weight") for key in model.state_dict())
    out = model.train().forward_train(images(2))
    assert all(b.logits is None for b in out.branches)
    assert model.eval()(images(2)).shape == (2, 8 * DIM)


def test_non_local_blocks_are_not_used_as_in_fastreid():
    cfg = mgn_cfg()
    cfg.MODEL.BACKBONE.WITH_NL = True  # fast-reid's SBS-based MGN recipes may set it; MGN drops the blocks
    assert not any("NL_" in key for key in build(cfg, 0).state_dict())


def test_rejects_non_resnet_backbone():
    cfg = mgn_cfg()
    cfg.MODEL.BACKBONE.NAME = "timm"
    with pytest.raises(ConfigError, match="build_resnet_backbone"):
        build_model(cfg, 0)
