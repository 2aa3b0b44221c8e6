"""A later stage's source model (PRUNE.SOURCE, QUANT.SOURCE, a teacher) loads strictly: a checkpoint that does not
fit is one CheckpointError naming the keys, unless MODEL.LOAD_STRICT False; unsafe files need an explicit opt-in."""

from __future__ import annotations

import argparse

import pytest
import torch

from compressreid.config import dump_config, load_config
from compressreid.distill.teacher import load_teacher
from compressreid.engine.source_run import load_source_model, resolve_source
from compressreid.errors import CheckpointError
from compressreid.modeling import build_model

TINY = ["MODEL.BACKBONE.DEPTH", "18x", "MODEL.BACKBONE.WIDTH", "0.125", "MODEL.BACKBONE.FEAT_DIM", "64",
        "MODEL.DEVICE", "cpu"]


def source_folder(tmp_path, edit=lambda state: state, extra=None):
    """A run folder (config.yaml, model_final.pth) whose checkpoint is the model's state dict after ``edit``."""
    cfg = load_config("", TINY)
    dump_config(cfg, str(tmp_path / "config.yaml"))
    state = edit(dict(build_model(cfg).state_dict()))
    torch.save({"model": state, **(extra or {})}, tmp_path / "model_final.pth")
    return str(tmp_path)


def without_backbone(state):
    return {k: v for k, v in state.items() if not k.startswith("backbone.")}


def with_extra_weights(state):
    return {**state, "backbone.nl.0.weight": torch.zeros(3)}


@pytest.mark.parametrize("edit, words", [(without_backbone, r"\d+ missing key\(s\) \(first: backbone\."),
                                         (with_extra_weights, r"1 unexpected key\(s\) \(first: backbone\.nl")])
def test_a_checkpoint_that_does_not_fit_is_refused_unless_partial_loads_are_allowed(tmp_path, edit, words):
    folder = source_folder(tmp_path, edit)
    with pytest.raises(CheckpointError, match=words) as info:
        load_source_model(resolve_source(folder, load_config("", TINY), "QUANT.SOURCE"))
    assert "MODEL.LOAD_STRICT False" in str(info.value)
    lenient = load_config("", [*TINY, "MODEL.LOAD_STRICT", "False"])
    assert load_source_model(resolve_source(folder, lenient, "QUANT.SOURCE")) is not None


def test_an_unsafe_checkpoint_needs_the_explicit_opt_in(tmp_path):
    folder = source_folder(tmp_path, extra={"args": argparse.Namespace(lr=0.1)})
    cfg = load_config("", TINY)
    with pytest.raises(CheckpointError, match="--allow-unsafe-checkpoint"):
        load_source_model(resolve_source(folder, cfg, "PRUNE.SOURCE"))
    assert load_source_model(resolve_source(folder, cfg, "PRUNE.SOURCE", allow_unsafe=True)) is not None


def test_a_teacher_checkpoint_with_weights_its_config_lacks_is_refused(tmp_path):
    folder = source_folder(tmp_path, with_extra_weights)
    args = (str(tmp_path / "config.yaml"), f"{folder}/model_final.pth", 0, "teacher")
    with pytest.raises(CheckpointError, match=r"1 weight\(s\) the teacher model .* does not, first: backbone\.nl"):
        load_teacher(*args)
    assert load_teacher(*args, strict=False) is not None
    with pytest.raises(CheckpointError, match="lacks .* weight"):  # missing weights were, and stay, an error
        load_teacher(str(tmp_path / "config.yaml"), source_folder(tmp_path / "x", without_backbone) +
                     "/model_final.pth", 0, "teacher", strict=False)


def test_a_source_without_a_classifier_loads_into_a_model_fine_tuned_with_one(tmp_path):
    # QAT and pruning build the source with a classifier for the training identities; a student saved without one
    # (no classifier to transfer, as with one sized for another dataset) is still a strict, complete load
    folder = source_folder(tmp_path)  # built with no classifier
    model = load_source_model(resolve_source(folder, load_config("", TINY), "QUANT.SOURCE"), num_classes=5)
    assert model.state_dict()["heads.weight"].shape[0] == 5
