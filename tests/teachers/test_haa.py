"""HAA: output contract, feature taps, gate supervision, 0-class build, crop/stripe checks, black-clothes items."""

import pytest
import torch
from PIL import Image

from compressreid.config import get_cfg
from compressreid.data.image_dataset import BLACK_CLOTHES_KEY, ImageDataset, collate
from compressreid.data.records import ImageRecord
from compressreid.errors import ConfigError
from compressreid.modeling import BranchOutput, ModelOutput, build_model
from compressreid.modeling.losses import build_criterion
from compressreid.modeling.losses.ensemble_losses import BLACK_LOGITS, ENSEMBLE_WEIGHTS, EnsembleGateLoss
from compressreid.teachers.haa_layers import HeadShoulderCrop

H, W = 64, 32
STRIPES, STRIPE_DIM = 3, 16


def haa_cfg(**haa):
    """R50-IBN at width 0.125 (base 8 channels, 256 out): the real layout at a size tests can afford."""
    cfg = get_cfg()
    cfg.MODEL.META_ARCHITECTURE = "HAA"
    cfg.MODEL.BACKBONE.WIDTH = 0.125
    cfg.MODEL.BACKBONE.WITH_IBN = True
    cfg.MODEL.HAA.NUM_STRIPES = STRIPES
    cfg.MODEL.HAA.STRIPE_DIM = STRIPE_DIM
    cfg.MODEL.LOSSES.NAME = ("CrossEntropyLoss", "TripletLoss", "EnsembleGateLoss")
    for key, value in haa.items():
        cfg.MODEL.HAA[key] = value
    return cfg


def build(cfg=None, num_classes=5, seed=0):
    torch.manual_seed(seed)
    return build_model(cfg or haa_cfg(), num_classes)


def images(batch=4, seed=0):
    return torch.rand(batch, 3, H, W, generator=torch.Generator().manual_seed(seed)) * 255.0


@pytest.fixture(scope="module")
def haa():
    return build()


# -- output contract --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("training", [False, True])
def test_forward_returns_fused_embedding_in_both_modes(haa, training):
    haa.train(training)
    with torch.no_grad():
        out = haa(images())
    assert type(out) is torch.Tensor
    assert out.shape == (4, haa.embedding_dim) == (4, 256 + STRIPES * STRIPE_DIM)
    assert torch.isfinite(out).all()


def test_forward_train_branches_and_aux(haa):
    haa.train()
    output = haa.forward_train(images(), torch.tensor([0, 1, 2, 4]))
    assert isinstance(output, ModelOutput)
    dims = [b.embedding.shape[1] for b in output.branches]
    # global, 3 stripes, head-shoulder (concatenated stripes), fused
    assert dims == [256, STRIPE_DIM, STRIPE_DIM, STRIPE_DIM, STRIPES * STRIPE_DIM, 256 + STRIPES * STRIPE_DIM]
    assert all(isinstance(b, BranchOutput) and b.logits.shape == (4, 5) for b in output.branches)
    assert torch.equal(output.embedding, output.branches[-1].embedding)
    weights = output.aux[ENSEMBLE_WEIGHTS]
    assert weights.shape == output.aux[BLACK_LOGITS].shape == (4, 2)
    assert torch.allclose(weights.sum(1), torch.ones(4))


def test_eval_forward_matches_forward_train_without_labels(haa):
    haa.eval()
    x = images(3, seed=1)
    with torch.no_grad():
        assert torch.allclose(haa(x), haa.forward_train(x).embedding, atol=1e-6)


def test_fused_embedding_is_the_weighted_concatenation():
    model = build().eval()
    x = images(2, seed=2)
    captured = {}
    model.fused_head.bottleneck.register_forward_hook(
        lambda m, inputs, out: captured.__setitem__("in", inputs[0].flatten(1)))
    with torch.no_grad():
        output = model.forward_train(x)
    w = output.aux[ENSEMBLE_WEIGHTS]
    global_vec, hs_vec = output.branches[0].embedding, output.branches[-2].embedding
    assert torch.allclose(captured["in"], torch.cat([w[:, :1] * global_vec, w[:, 1:] * hs_vec], 1))


def test_zero_classes_builds_without_classifiers():
    model = build(num_classes=0)
    classifiers = {"heads.weight", "hs_head.weight", "fused_head.weight", "stripe_heads.0.weight"}
    assert classifiers.isdisjoint(model.state_dict())
    output = model.train().forward_train(images(2), torch.tensor([0, 1]))
    assert all(b.logits is None for b in output.branches)
    assert output.aux[BLACK_LOGITS].shape == (2, 2)  # the gate does not need identity classes


# -- feature taps -----------------------------------------------------------------------------------------------


def test_feature_info_matches_hooked_shapes(haa):
    expected = [f"backbone.layer{i}" for i in range(1, 5)] + [f"hs_backbone.layer{i}" for i in range(1, 5)]
    assert [f.module for f in haa.feature_info] == expected + ["hs_attention"]
    shapes = {}
    handles = [haa.get_submodule(info.module).register_forward_hook(
        lambda module, inputs, output, name=info.module: shapes.__setitem__(name, tuple(output.shape)))
        for info in haa.feature_info]
    try:
        with torch.no_grad():
            haa.eval()(images(1))
    finally:
        for handle in handles:
            handle.remove()
    assert set(shapes) == {info.module for info in haa.feature_info}
    for info in haa.feature_info:
        _, channels, height, width = shapes[info.module]
        assert channels == info.channels
        # the stem max-pool uses ceil_mode, which can add one row/column
        assert H / info.stride <= height <= H / info.stride + 1
        assert W / info.stride <= width <= W / info.stride + 1


# -- adaptive ensemble supervision ------------------------------------------------------------------------------


def test_gate_supervision_moves_head_shoulder_weight_towards_black():
    model = build(num_classes=0, seed=3).train()
    x = images(8, seed=3)
    flags = torch.tensor([1, 1, 1, 1, 0, 0, 0, 0])
    loss_fn = EnsembleGateLoss(scale=1.0)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)

    def hs_weight():
        with torch.no_grad():
            w = model.forward_train(x).aux[ENSEMBLE_WEIGHTS][:, 1]
        return w[flags == 1].mean().item(), w[flags == 0].mean().item()

    black_before, other_before = hs_weight()
    for _ in range(5):
        loss = loss_fn(model.forward_train(x), torch.zeros(8, dtype=torch.long), {BLACK_CLOTHES_KEY: flags})
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    black_after, other_after = hs_weight()
    assert black_after > black_before + 0.05
    assert other_after < other_before - 0.05
    assert black_after > 0.5 > other_after


def test_criterion_from_config_sums_branch_losses_and_gate(haa):
    haa.train()
    targets = torch.tensor([0, 0, 1, 1])
    batch = {BLACK_CLOTHES_KEY: torch.tensor([1, 1, -1, -1])}
    terms = build_criterion(haa_cfg())(haa.forward_train(images(), targets), targets, batch)
    assert set(terms) == {"CrossEntropyLoss", "TripletLoss", "EnsembleGateLoss"}
    assert all(t.dim() == 0 and torch.isfinite(t) for t in terms.values())
    sum(terms.values()).backward()
    assert haa.ensemble.classifier.weight.grad is not None


# -- configuration checks ---------------------------------------------------------------------------------------


def test_crop_takes_the_box_and_resamples_to_input_size():
    x = torch.zeros(1, 1, 10, 4)
    x[:, :, :4] = 1.0  # the top 40% is ones
    crop = HeadShoulderCrop((0.0, 0.0, 1.0, 0.4))
    assert crop.pixel_box(10, 4) == (0, 4, 0, 4)
    out = crop(x)
    assert out.shape == x.shape and torch.all(out == 1.0)


@pytest.mark.parametrize("box", [(0.0, 0.5, 1.0, 0.4), (0.0, 0.0, 1.2, 0.4), (0.0, 0.0, 1.0)])
def test_bad_box_is_a_config_error(box):
    with pytest.raises(ConfigError, match="HS_BOX"):
        HeadShoulderCrop(box)


def test_more_stripes_than_rows_is_a_config_error():
    model = build(haa_cfg(NUM_STRIPES=6), num_classes=0).eval()  # 64x32 at stride 16: 5 rows (ceil-mode pool)
    with pytest.raises(ConfigError, match="NUM_STRIPES"):
        model(images(1))


# -- black-clothes flag in loader items -------------------------------------------------------------------------


def test_items_carry_black_clothes_flag_and_collate(tmp_path):
    path = tmp_path / "a.png"
    Image.new("RGB", (4, 8), (10, 10, 10)).save(path)
    records = [ImageRecord(str(path), 1, 0, {"black_clothes": True}), ImageRecord(str(path), 2, 0,
               {"black_clothes": False}), ImageRecord(str(path), 3, 1)]
    dataset = ImageDataset(records, lambda image: torch.zeros(3, 8, 4))
    assert [dataset[i][BLACK_CLOTHES_KEY] for i in range(3)] == [1, 0, -1]
    batch = collate([dataset[i] for i in range(3)])
    assert batch[BLACK_CLOTHES_KEY].tolist() == [1, 0, -1]
