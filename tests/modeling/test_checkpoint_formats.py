"""Checkpoint source formats: detection from explicit key signatures, per-format renames, refusals, reporting."""

from __future__ import annotations

import logging

import pytest
import torch

from compressreid.checkpoint import load_checkpoint, save_checkpoint
from compressreid.checkpoint_formats import FORMATS, detect_format
from compressreid.config import load_config
from compressreid.errors import CheckpointError
from compressreid.modeling import build_model


def tiny(num_classes: int = 5, seed: int = 0):
    """A width-1/8 ResNet-18 Baseline: fast-reid's names, built in milliseconds."""
    torch.manual_seed(seed)
    cfg = load_config("", ["MODEL.BACKBONE.DEPTH", "18x", "MODEL.BACKBONE.WIDTH", "0.125"])
    model = build_model(cfg, num_classes)
    with torch.no_grad():  # move BN statistics off their defaults so equality checks mean something
        for name, buf in model.named_buffers():
            if "running" in name:
                buf.uniform_(0.5, 1.5)
    return model


def as_modelzoo(state):
    """Names of fast-reid's model-zoo generation (BNneckHead), written test-side from its source."""
    out = {}
    for key, value in state.items():
        key = key.replace("heads.bottleneck.0.", "heads.bnneck.")
        out["heads.classifier.weight" if key == "heads.weight" else key] = value
    return out


def assert_same(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    for key in sa:
        assert torch.equal(sa[key], sb[key]), key


@pytest.mark.parametrize("keys, expected", [
    (["backbone.conv1.weight", "heads.bottleneck.0.weight", "heads.weight"], "fastreid-v1"),
    (["backbone.conv1.weight", "heads.bottleneck.0.weight", "heads.classifier.weight"], "fastreid-v1.0"),
    (["backbone.conv1.weight", "heads.bnneck.weight", "heads.classifier.weight", "pixel_mean"], "fastreid-modelzoo"),
    (["backbone.0.weight", "b1_head.bottleneck.1.weight", "b1_head.weight"], "fastreid-v1"),
    (["backbone.0.weight", "b1_head.bottleneck.1.weight", "b1_head.classifier.weight"], "fastreid-v1.0"),
    (["backbone.0.weight", "b1_pool.1.weight", "b1_pool.2.weight", "b1_head.bnneck.weight"], "fastreid-modelzoo-mgn"),
])
def test_format_is_detected_from_key_signatures(keys, expected):
    assert detect_format(dict.fromkeys(keys, torch.zeros(1))).name == expected


def test_every_format_has_a_description_and_the_last_one_matches_anything():
    assert len({fmt.name for fmt in FORMATS}) == len(FORMATS)
    assert all(fmt.description for fmt in FORMATS)
    assert FORMATS[-1].matches([])


def test_modelzoo_layout_loads_into_v1_names_and_is_logged(tmp_path, caplog):
    source, target = tiny(seed=1), tiny(seed=2)
    state = as_modelzoo(source.state_dict())
    state["pixel_mean"] = source.preprocess.pixel_mean.clone()
    state["pixel_std"] = source.preprocess.pixel_std.clone()
    path = tmp_path / "market_bot.pth"
    torch.save({"model": state, "iteration": 100}, path)
    with caplog.at_level(logging.INFO, logger="compressreid.checkpoint"):
        report = load_checkpoint(target, str(path))
    assert report.format == "fastreid-modelzoo"
    assert report.missing == [] and report.unexpected == [] and report.skipped == []
    assert_same(source, target)
    assert "fastreid-modelzoo" in caplog.text


def test_modelzoo_mgn_into_a_model_without_its_branch_stack_is_refused_and_nothing_loads(tmp_path):
    """Its reduction BN has the BNNeck's shape, so without the check it would load into the wrong layer."""
    path = tmp_path / "market_mgn.pth"
    bn = {entry: torch.ones(4) for entry in ("weight", "bias", "running_mean", "running_var")}
    state = {"b1_pool.1.weight": torch.zeros(4, 8, 1, 1), **{f"b1_pool.2.{k}": v for k, v in bn.items()},
             **{f"b1_head.bnneck.{k}": v for k, v in bn.items()}}
    torch.save({"model": state}, path)
    model = tiny()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(CheckpointError, match=r"market_mgn\.pth: the checkpoint's b1_head reduces to 4 channels "
                                              r"with BN \+ ReLU.*EMBEDDING_DIM 4 and MODEL\.HEADS\.REDUCTION_BN_RELU True"):
        load_checkpoint(model, str(path))
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


def test_a_plain_reduction_checkpoint_into_a_model_with_the_bn_relu_stack_is_refused(tmp_path):
    """The reverse: a head reduced without BN + ReLU has its BNNeck at bottleneck.1, the stack's BN slot."""
    plain = ["MODEL.BACKBONE.DEPTH", "18x", "MODEL.BACKBONE.WIDTH", "0.125", "MODEL.HEADS.EMBEDDING_DIM", "16"]
    source = build_model(load_config("", plain), 5)
    target = build_model(load_config("", plain + ["MODEL.HEADS.REDUCTION_BN_RELU", "True"]), 5)
    path = save_checkpoint(str(tmp_path / "plain.pth"), source)
    with pytest.raises(CheckpointError, match=r"plain\.pth: the checkpoint's heads has no BN \+ ReLU after its "
                                              r"reduction; build the model with MODEL\.HEADS\.REDUCTION_BN_RELU False"):
        load_checkpoint(target, path)
    assert load_checkpoint(build_model(load_config("", plain), 5), path).missing == []


def test_data_parallel_prefix_is_stripped(tmp_path):
    source, target = tiny(seed=1), tiny(seed=2)
    path = tmp_path / "ddp.pth"
    torch.save({"model": {f"module.{k}": v for k, v in source.state_dict().items()}}, path)
    assert load_checkpoint(target, str(path)).missing == []
    assert_same(source, target)


def test_fastreid_extra_entries_are_read_and_left_alone(tmp_path):
    source = tiny(seed=1)
    optimizer = torch.optim.Adam(source.parameters(), lr=3.5e-4)
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, [40, 90])
    path = save_checkpoint(str(tmp_path / "model_final.pth"), source, optimizer=optimizer.state_dict(),
                           lr_sched=scheduler.state_dict(), epoch=119, iteration=22000, metric=0.87)
    target = tiny(seed=2)
    report = load_checkpoint(target, path)
    assert report.format == "fastreid-v1" and report.missing == [] and report.unexpected == []
    assert_same(source, target)


def test_classifier_of_another_dataset_is_skipped_and_said(tmp_path, caplog):
    path = save_checkpoint(str(tmp_path / "duke.pth"), tiny(num_classes=702, seed=1))
    target = tiny(num_classes=751, seed=2)
    before = target.heads.weight.detach().clone()
    with caplog.at_level(logging.WARNING, logger="compressreid.checkpoint"):
        report = load_checkpoint(target, path)
    assert report.skipped == ["heads.weight"] and "skipped" in caplog.text
    assert torch.equal(target.heads.weight, before)


def test_pixel_statistics_replace_the_configs_and_warn(tmp_path, caplog):
    source, target = tiny(seed=1), tiny(seed=2)
    state = as_modelzoo(source.state_dict())
    state["pixel_mean"] = torch.tensor([100.0, 110.0, 120.0]).view(1, 3, 1, 1)
    state["pixel_std"] = target.preprocess.pixel_std.clone()
    path = tmp_path / "old.pth"
    torch.save({"model": state}, path)
    with caplog.at_level(logging.WARNING, logger="compressreid.checkpoint"):
        load_checkpoint(target, str(path))
    assert target.preprocess.pixel_mean.flatten().tolist() == [100.0, 110.0, 120.0]
    assert "pixel_mean" in caplog.text and "pixel_std" not in caplog.text


def test_pixel_statistics_of_the_wrong_size_change_nothing(tmp_path):
    source, target = tiny(seed=1), tiny(seed=2)
    before = {k: v.clone() for k, v in target.state_dict().items()}
    state = as_modelzoo(source.state_dict())
    state["pixel_mean"] = torch.zeros(1, 1, 1, 1)
    path = tmp_path / "gray.pth"
    torch.save({"model": state}, path)
    with pytest.raises(CheckpointError, match="pixel_mean has 1 values"):
        load_checkpoint(target, str(path))
    assert all(torch.equal(v, before[k]) for k, v in target.state_dict().items())


def test_strict_load_raises_on_unexpected_keys(tmp_path):
    state = dict(tiny().state_dict())
    state["heads.extra.weight"] = torch.zeros(3)
    path = tmp_path / "extra.pth"
    torch.save({"model": state}, path)
    assert load_checkpoint(tiny(seed=3), str(path)).unexpected == ["heads.extra.weight"]
    with pytest.raises(CheckpointError, match=r"strict.*heads\.extra\.weight"):
        load_checkpoint(tiny(seed=3), str(path), strict=True)


def test_unsafe_fastreid_file_is_refused_naming_the_opt_in(tmp_path):
    """Older fast-reid files may pickle arbitrary objects (e.g. a config node); reading them needs an opt-in."""
    from yacs.config import CfgNode

    path = tmp_path / "with_cfg.pth"
    torch.save({"model": tiny().state_dict(), "cfg": CfgNode({"A": 1})}, path)
    with pytest.raises(CheckpointError, match="arbitrary unpickling.*allow_unsafe=True"):
        load_checkpoint(tiny(), str(path))
    assert load_checkpoint(tiny(), str(path), allow_unsafe=True).missing == []
