"""``get_cfg().merge_from_file`` / ``merge_from_list`` go through compressreid's loader (fast-reid files unchanged)."""

from __future__ import annotations

import logging
import textwrap

import pytest

from compressreid.config import get_cfg, load_config
from compressreid.errors import ConfigError

# An excerpt of a fast-reid v1.4 OUTPUT_DIR/config.yaml: keys compressreid reads, and keys it does not.
FASTREID_DUMP = """\
    KD:
      EMA:
        ENABLED: False
      MODEL_CONFIG: []
    MODEL:
      BACKBONE:
        DEPTH: 50x
        WITH_IBN: True
        WITH_SE: False
        SIE_COE: 3.0
      HEADS:
        NUM_CLASSES: 751
        POOL_LAYER: GeneralizedMeanPoolingP
      QUEUE_SIZE: 8192
    INPUT:
      CROP:
        ENABLED: False
    TEST:
      PRECISE_BN:
        ENABLED: False
    """


def write(tmp_path, text, name="config.yaml"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return str(path)


def test_merge_from_file_accepts_a_fastreid_dump_and_warns_once(tmp_path, caplog):
    cfg = get_cfg()
    with caplog.at_level(logging.WARNING, logger="compressreid.config.loading"):
        cfg.merge_from_file(write(tmp_path, FASTREID_DUMP))
    assert cfg.MODEL.BACKBONE.WITH_IBN and cfg.MODEL.HEADS.NUM_CLASSES == 751
    assert cfg.MODEL.HEADS.POOL_LAYER == "GeneralizedMeanPoolingP"
    warnings = [r for r in caplog.records if "fast-reid key" in r.getMessage()]
    assert len(warnings) == 1 and "MODEL.QUEUE_SIZE" in warnings[0].getMessage()


def test_merge_from_file_equals_load_config(tmp_path):
    path = write(tmp_path, FASTREID_DUMP)
    cfg = get_cfg()
    cfg.merge_from_file(path)
    assert cfg == load_config(path, freeze=False)


def test_merge_from_file_follows_base_and_still_rejects_typos(tmp_path):
    write(tmp_path, "MODEL:\n  BACKBONE:\n    DEPTH: 18x\n", "base.yml")
    cfg = get_cfg()
    cfg.merge_from_file(write(tmp_path, "_BASE_: base.yml\nMODEL:\n  HEADS:\n    NECK_FEAT: before\n"))
    assert cfg.MODEL.BACKBONE.DEPTH == "18x" and cfg.MODEL.HEADS.NECK_FEAT == "before"
    with pytest.raises(ConfigError, match="MODEL.HEADS.NECK_FEET.*did you mean 'MODEL.HEADS.NECK_FEAT'"):
        get_cfg().merge_from_file(write(tmp_path, "MODEL:\n  HEADS:\n    NECK_FEET: before\n", "typo.yml"))


def test_merge_from_list_ignores_fastreid_keys_and_checks_types():
    cfg = get_cfg()
    cfg.merge_from_list(["MODEL.BACKBONE.DEPTH", "101x", "MODEL.QUEUE_SIZE", "4096"])
    assert cfg.MODEL.BACKBONE.DEPTH == "101x"
    with pytest.raises(ConfigError, match="SOLVER.BASE_LR"):
        cfg.merge_from_list(["SOLVER.BASE_LR", "fast"])


def test_a_structural_fastreid_key_is_not_silently_ignored(tmp_path):
    with pytest.raises(ConfigError, match="MODEL.BACKBONE.WITH_SE: True.*changes the model"):
        get_cfg().merge_from_file(write(tmp_path, "MODEL:\n  BACKBONE:\n    WITH_SE: True\n"))


def test_a_frozen_config_refuses_merges(tmp_path):
    cfg = load_config()
    with pytest.raises(ConfigError, match="frozen"):
        cfg.merge_from_file(write(tmp_path, "SEED: 3\n"))
    assert cfg.SEED == 0


def test_nodes_and_clones_keep_the_type():
    cfg = get_cfg()
    assert type(cfg.MODEL.BACKBONE) is type(cfg) and type(cfg.clone()) is type(cfg)
