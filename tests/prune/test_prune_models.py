"""Pruning every registered student family: embedding kept, MACs cut by the target, widths rounded, feature taps
re-derived, and a history that rebuilds the exact pruned model on a fresh one (weights_only checkpoints)."""

from __future__ import annotations

import copy
import math

import pytest
import torch

from compressreid.checkpoint import save_checkpoint
from compressreid.config import get_cfg
from compressreid.engine.source_run import PRUNING_HISTORY, SourceRun, load_source_model
from compressreid.errors import CheckpointError
from compressreid.modeling import build_model
from compressreid.modeling.layers.norm import IBN
from compressreid.prune.adapter import count_macs_params, prune_step
from compressreid.prune.history import apply_pruning_history, new_history, refresh_feature_info
from compressreid.prune.importance import PRUNING_IMPORTANCES

H, W = 64, 32
SIZE = [H, W]
CASES = {
    "r18": ("build_resnet_backbone", {"DEPTH": "18x", "WIDTH": 0.25}),
    "r18_ibn": ("build_resnet_backbone", {"DEPTH": "18x", "WIDTH": 0.25, "WITH_IBN": True}),
    "osnet": ("osnet", {"WIDTH": 0.25}),
    "osnet_ain": ("osnet_ain", {"WIDTH": 0.25}),
    "mobilenetv3_small": ("mobilenetv3_small", {"WIDTH": 0.5}),
}


def images(batch: int = 2, seed: int = 0) -> torch.Tensor:
    return torch.rand(batch, 3, H, W, generator=torch.Generator().manual_seed(seed)) * 255.0


def config(case: str):
    name, overrides = CASES[case]
    cfg = get_cfg()
    cfg.MODEL.BACKBONE.NAME = name
    for key, value in overrides.items():
        cfg.MODEL.BACKBONE[key] = value
    return cfg


def build(case: str, seed: int = 0) -> torch.nn.Module:
    """A model with one batch's BN statistics (fresh BNs are identities and every channel looks alike) and
    random-looking norm scales, so importance criteria have something to rank."""
    torch.manual_seed(seed)
    model = build_model(config(case), num_classes=5)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, (torch.nn.BatchNorm2d, torch.nn.InstanceNorm2d)) and module.affine:
                module.weight.uniform_(0.2, 1.5)
        model.train()
        model(images(8, seed=5))
    return model.eval()


@pytest.fixture(scope="module")
def pruned():
    """Each case pruned once to half its MACs (round_to 8); returns (model, history, counts before)."""
    cache = {}

    def get(case: str):
        if case not in cache:
            model = build(case)
            before = count_macs_params(model, SIZE)
            history = new_history(SIZE)
            step = prune_step(model, SIZE, PRUNING_IMPORTANCES.get("l2").build(), "macs", 0.5 * before["macs"], 8)
            history["steps"].append(step.records)
            refresh_feature_info(model, SIZE)
            cache[case] = (model.eval(), history, before)
        return cache[case]

    return get


@pytest.mark.parametrize("case", list(CASES))
def test_pruning_keeps_the_embedding_and_cuts_macs_by_the_target(case, pruned):
    model, _, before = pruned(case)
    unpruned = build(case)
    with torch.no_grad():
        out = model(images(3))
    assert out.shape == (3, unpruned.embedding_dim) and torch.isfinite(out).all()
    assert model.backbone.out_channels == unpruned.backbone.out_channels
    assert model.heads.weight.shape == unpruned.heads.weight.shape  # the classifier is kept
    after = count_macs_params(model, SIZE)
    assert 0.4 * before["macs"] <= after["macs"] <= 0.5 * before["macs"]
    assert after["params"] < before["params"]


@pytest.mark.parametrize("case", list(CASES))
def test_pruned_widths_are_multiples_of_round_to(case, pruned):
    model, _, _ = pruned(case)
    original = dict(build(case).named_modules())
    changed = [(name, m.out_channels) for name, m in model.named_modules()
               if isinstance(m, torch.nn.Conv2d) and m.out_channels != original[name].out_channels]
    assert changed, "nothing was pruned"
    assert all(channels % 8 == 0 for _, channels in changed), changed


@pytest.mark.parametrize("case", list(CASES))
def test_feature_info_matches_hooked_shapes_after_pruning(case, pruned):
    model, _, _ = pruned(case)
    seen = {}
    handles = [model.get_submodule(tap.module).register_forward_hook(
        lambda _m, _i, out, key=tap.module: seen.__setitem__(key, out.shape[1])) for tap in model.feature_info]
    with torch.no_grad():
        model(images())
    for handle in handles:
        handle.remove()
    assert {tap.module: tap.channels for tap in model.feature_info} == seen
    assert [t.channels for t in model.backbone.feature_info] == [t.channels for t in model.feature_info]
    assert any(a.channels != b.channels for a, b in zip(model.feature_info, build(case).feature_info))


@pytest.mark.parametrize("case", list(CASES))
def test_history_rebuilds_the_pruned_model_from_a_weights_only_checkpoint(case, pruned, tmp_path):
    model, history, _ = pruned(case)
    path = str(tmp_path / "model_final.pth")
    save_checkpoint(path, model, **{PRUNING_HISTORY: history})
    data = torch.load(path, map_location="cpu", weights_only=True)  # plain data: no pickled module
    fresh = build_model(config(case), num_classes=5)  # other random weights, unpruned
    apply_pruning_history(fresh, data[PRUNING_HISTORY])
    fresh.load_state_dict(data["model"], strict=True)
    x = images(3, seed=7)
    with torch.no_grad():
        assert torch.equal(fresh.eval()(x), model(x))
    assert fresh.feature_info == model.feature_info
    cfg = config(case)
    cfg.MODEL.HEADS.NUM_CLASSES = 5
    loaded = load_source_model(SourceRun(cfg, path)).eval()  # the path later stages take
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))


def test_ibn_halves_are_pruned_in_proportion(pruned):
    model, _, _ = pruned("r18_ibn")
    ibns = [m for m in model.modules() if isinstance(m, IBN)]
    original = [m for m in build("r18_ibn").modules() if isinstance(m, IBN)]
    for ibn in ibns:
        width = ibn.IN.num_features + ibn.BN.num_features
        assert ibn.half == ibn.IN.num_features == width // 2  # still IBN-a: half the channels instance-normed
    assert any(a.half < b.half for a, b in zip(ibns, original))  # and they were pruned


@pytest.mark.parametrize("importance", sorted(PRUNING_IMPORTANCES))
def test_every_importance_criterion_prunes(importance):
    model = build("r18_ibn")
    before = count_macs_params(model, SIZE)
    if PRUNING_IMPORTANCES.get(importance).needs_gradients:
        model.train()
        model(images(4)).pow(2).mean().backward()
        model.eval()
    step = prune_step(model, SIZE, PRUNING_IMPORTANCES.get(importance).build(), "macs", 0.7 * before["macs"], 8)
    assert step.records and step.counts["macs"] <= 0.7 * before["macs"]
    assert all(p.grad is None for p in model.parameters())  # gradients read, then dropped
    with torch.no_grad():
        assert model(images()).shape == (2, model.embedding_dim)


def test_bn_scale_ranks_channels_by_their_norm_scale():
    model = build("r18")
    bn = model.backbone.layer1[0].bn1
    with torch.no_grad():
        bn.weight.copy_(torch.linspace(1.0, 2.0, bn.num_features))
        bn.weight[3] = 1e-3  # the obviously useless channel
    before = count_macs_params(model, SIZE)
    step = prune_step(model, SIZE, PRUNING_IMPORTANCES.get("bn_scale").build(), "macs", 0.8 * before["macs"], 1)
    pruned = {name: idxs for name, fn, idxs in step.records if fn == "prune_out_channels"}
    assert 3 in pruned["backbone.layer1.0.conv1"]
    assert len(pruned["backbone.layer1.0.conv1"]) < bn.num_features // 2


def test_global_ranking_and_params_target():
    model = build("mobilenetv3_small")
    before = count_macs_params(model, SIZE)
    step = prune_step(model, SIZE, PRUNING_IMPORTANCES.get("l1").build(), "params", 0.6 * before["params"], 8,
                      global_ranking=True)
    assert 0.5 * before["params"] <= step.counts["params"] <= 0.6 * before["params"]
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert all(m.out_channels >= 1 for m in convs)
    with torch.no_grad():
        assert torch.isfinite(model(images())).all()


def test_a_target_already_met_prunes_nothing():
    model = build("r18")
    before = count_macs_params(model, SIZE)
    step = prune_step(model, SIZE, PRUNING_IMPORTANCES.get("l2").build(), "macs", before["macs"] + 1, 8)
    assert step.records == [] and step.counts == before


def test_history_that_does_not_fit_is_refused():
    model = build("r18")
    with pytest.raises(CheckpointError, match="format"):
        apply_pruning_history(model, [["backbone.conv1", "prune_out_channels", [0]]])
    history = new_history(SIZE)
    history["steps"].append([["backbone.nope", "prune_out_channels", [0]]])
    with pytest.raises(CheckpointError, match="backbone.nope"):
        apply_pruning_history(model, history)
    history["steps"] = [[["backbone.conv1", "prune_out_channels", [999]]]]
    with pytest.raises(CheckpointError, match="does not fit"):
        apply_pruning_history(copy.deepcopy(model), history)
    with torch.no_grad():
        assert math.isfinite(float(model(images()).sum()))
