"""Every yaml shipped under configs/ loads through load_config and builds its model (at a tiny width)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from compressreid.config import load_config
from compressreid.modeling import build_model

CONFIG_ROOT = Path(__file__).resolve().parents[2] / "configs"
SHIPPED = sorted(p for p in CONFIG_ROOT.rglob("*.yml"))
# Real-dataset recipes name ImageNet files the user provides (never downloaded), and R50 at full width is slow:
# build the same architecture at ResNet-18 depth and 1/8 width, without pretraining.
TINY = ["MODEL.BACKBONE.PRETRAIN", "False", "MODEL.BACKBONE.WIDTH", "0.125"]


def test_the_real_dataset_recipes_are_shipped():
    names = {str(p.relative_to(CONFIG_ROOT)) for p in SHIPPED}
    for dataset in ("Market1501", "DukeMTMC", "MSMT17", "VeRi"):
        for recipe in ("bagtricks", "sbs", "mgn"):
            assert f"{dataset}/{recipe}_R50-ibn.yml" in names


@pytest.mark.parametrize("path", [p for p in SHIPPED if p.parent.name != "_base_"],
                         ids=lambda p: str(p.relative_to(CONFIG_ROOT)))
def test_shipped_config_loads_and_builds(path):
    cfg = load_config(str(path))
    depth = ["MODEL.BACKBONE.DEPTH", "18x"] if cfg.MODEL.BACKBONE.NAME == "build_resnet_backbone" else []
    model = build_model(load_config(str(path), TINY + depth), num_classes=3).eval()
    height, width = cfg.INPUT.SIZE_TEST
    with torch.no_grad():
        embedding = model(torch.rand(2, 3, height, width) * 255)
    assert embedding.shape == (2, model.embedding_dim)


@pytest.mark.parametrize("dataset", ["Market1501", "DukeMTMC", "MSMT17"])
def test_person_recipes_carry_fastreid_hyperparameters(dataset):
    bot = load_config(str(CONFIG_ROOT / dataset / "bagtricks_R50-ibn.yml"))
    sbs = load_config(str(CONFIG_ROOT / dataset / "sbs_R50-ibn.yml"))
    mgn = load_config(str(CONFIG_ROOT / dataset / "mgn_R50-ibn.yml"))
    assert bot.MODEL.BACKBONE.WITH_IBN and bot.SOLVER.STEPS == [40, 90] and bot.INPUT.SIZE_TRAIN == [256, 128]
    assert sbs.MODEL.HEADS.POOL_LAYER == "GeneralizedMeanPoolingP" and sbs.MODEL.BACKBONE.WITH_NL
    assert sbs.MODEL.HEADS.CLS_LAYER == "CircleSoftmax" and sbs.MODEL.HEADS.SCALE == 64.0
    assert mgn.MODEL.META_ARCHITECTURE == "MGN" and mgn.MODEL.HEADS.EMBEDDING_DIM == 256
    assert not mgn.MODEL.BACKBONE.WITH_NL and tuple(bot.DATASETS.NAMES) == (dataset,)
