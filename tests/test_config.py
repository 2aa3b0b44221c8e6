"""Config loading: defaults, _BASE_ inheritance, fast-reid yaml compatibility, validation, overrides, dumping."""

import logging
import textwrap
from pathlib import Path

import pytest

from compressreid.config import dump_config, get_cfg, load_config, read_yaml_with_bases
from compressreid.config.fastreid_keys import is_fastreid_only
from compressreid.errors import ConfigError

LOADER_LOGGER = "compressreid.config.loading"


def write(path: Path, text: str) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return str(path)


# Modelled on fast-reid v1.x configs/Base-bagtricks.yml (PRETRAIN off: compressreid never downloads).
BASE_BAGTRICKS = """\
MODEL:
  META_ARCHITECTURE: Baseline

  BACKBONE:
    NAME: build_resnet_backbone
    NORM: BN
    DEPTH: 50x
    LAST_STRIDE: 1
    FEAT_DIM: 2048
    WITH_IBN: False
    PRETRAIN: False

  HEADS:
    NAME: EmbeddingHead
    NORM: BN
    WITH_BNNECK: True
    POOL_LAYER: GlobalAvgPool
    NECK_FEAT: before
    CLS_LAYER: Linear

  LOSSES:
    NAME: ("CrossEntropyLoss", "TripletLoss",)

    CE:
      EPSILON: 0.1
      SCALE: 1.

    TRI:
      MARGIN: 0.3
      HARD_MINING: True
      NORM_FEAT: False
      SCALE: 1.

INPUT:
  SIZE_TRAIN: [ 256, 128 ]
  SIZE_TEST: [ 256, 128 ]

  REA:
    ENABLED: True
    PROB: 0.5

  FLIP:
    ENABLED: True

  PADDING:
    ENABLED: True

DATALOADER:
  SAMPLER_TRAIN: NaiveIdentitySampler
  NUM_INSTANCE: 4
  NUM_WORKERS: 8

SOLVER:
  AMP:
    ENABLED: True
  OPT: Adam
  MAX_EPOCH: 120
  BASE_LR: 0.00035
  WEIGHT_DECAY: 0.0005
  WEIGHT_DECAY_NORM: 0.0005
  IMS_PER_BATCH: 64

  SCHED: MultiStepLR
  STEPS: [ 40, 90 ]
  GAMMA: 0.1

  WARMUP_FACTOR: 0.1
  WARMUP_ITERS: 2000

  CHECKPOINT_PERIOD: 30

TEST:
  EVAL_PERIOD: 30
  IMS_PER_BATCH: 128

CUDNN_BENCHMARK: True
"""

# Modelled on fast-reid v1.x configs/Market1501/bagtricks_R50-ibn.yml.
MARKET_BAGTRICKS_IBN = """\
_BASE_: ../Base-bagtricks.yml

MODEL:
  BACKBONE:
    WITH_IBN: True

DATASETS:
  NAMES: ("Market1501",)
  TESTS: ("Market1501",)

OUTPUT_DIR: logs/market1501/bagtricks_R50-ibn
"""

# The fast-reid-only part of an OUTPUT_DIR/config.yaml dump written by fast-reid v1.x (every default is dumped).
FASTREID_ONLY_DUMP = """\
KD:
  EMA:
    ENABLED: false
    MOMENTUM: 0.999
  MODEL_CONFIG:
  - ''
  MODEL_WEIGHTS:
  - ''
MODEL:
  QUEUE_SIZE: 8192
  BACKBONE:
    WITH_SE: false
  LOSSES:
    FL:
      ALPHA: 0.25
      GAMMA: 2
      SCALE: 1.0
INPUT:
  CROP:
    ENABLED: false
    RATIO:
    - 0.75
    - 1.3333333333333333
    SCALE:
    - 0.16
    - 1
    SIZE:
    - 224
    - 224
  AFFINE:
    ENABLED: false
DATALOADER:
  SET_WEIGHT: []
SOLVER:
  SWA:
    ENABLED: false
    ITER: 10
    PERIOD: 2
    LR_FACTOR: 10.0
    ETA_MIN_LR: 3.5e-06
    LR_SCHED: false
TEST:
  PRECISE_BN:
    DATASET: Market1501
    ENABLED: false
    NUM_ITER: 300
"""

FASTREID_ONLY_EXPECTED = [
    "KD",
    "MODEL.QUEUE_SIZE",
    "MODEL.BACKBONE.WITH_SE",
    "MODEL.LOSSES.FL",
    "INPUT.CROP",
    "INPUT.AFFINE",
    "DATALOADER.SET_WEIGHT",
    "SOLVER.SWA",
    "TEST.PRECISE_BN",
]

# The keys compressreid shares with fast-reid, as a v1.x dump writes them (lower-case booleans, block lists).
SHARED_DUMP = """\
CUDNN_BENCHMARK: true
DATALOADER:
  NUM_INSTANCE: 4
  NUM_WORKERS: 8
  SAMPLER_TRAIN: NaiveIdentitySampler
DATASETS:
  COMBINEALL: false
  NAMES:
  - Market1501
  TESTS:
  - Market1501
INPUT:
  AUGMIX:
    ENABLED: false
    PROB: 0.0
  AUTOAUG:
    ENABLED: false
    PROB: 0.0
  CJ:
    BRIGHTNESS: 0.15
    CONTRAST: 0.15
    ENABLED: false
    HUE: 0.1
    PROB: 0.5
    SATURATION: 0.1
  FLIP:
    ENABLED: true
    PROB: 0.5
  PADDING:
    ENABLED: true
    MODE: constant
    SIZE: 10
  REA:
    ENABLED: true
    PROB: 0.5
    VALUE:
    - 123.675
    - 116.28
    - 103.53
  SIZE_TEST:
  - 256
  - 128
  SIZE_TRAIN:
  - 256
  - 128
MODEL:
  BACKBONE:
    DEPTH: 50x
    FEAT_DIM: 2048
    LAST_STRIDE: 1
    NAME: build_resnet_backbone
    NORM: BN
    PRETRAIN: false
    PRETRAIN_PATH: ''
    WITH_IBN: true
    WITH_NL: false
  DEVICE: cuda
  FREEZE_LAYERS: []
  HEADS:
    CLS_LAYER: Linear
    EMBEDDING_DIM: 0
    MARGIN: 0.0
    NAME: EmbeddingHead
    NECK_FEAT: before
    NORM: BN
    NUM_CLASSES: 751
    POOL_LAYER: GlobalAvgPool
    SCALE: 1
    WITH_BNNECK: true
  LOSSES:
    CE:
      ALPHA: 0.2
      EPSILON: 0.1
      SCALE: 1.0
    CIRCLE:
      GAMMA: 128
      MARGIN: 0.25
      SCALE: 1.0
    COSFACE:
      GAMMA: 128
      MARGIN: 0.25
      SCALE: 1.0
    NAME:
    - CrossEntropyLoss
    - TripletLoss
    TRI:
      HARD_MINING: true
      MARGIN: 0.3
      NORM_FEAT: false
      SCALE: 1.0
  META_ARCHITECTURE: Baseline
  PIXEL_MEAN:
  - 123.675
  - 116.28
  - 103.53
  PIXEL_STD:
  - 58.395
  - 57.120000000000005
  - 57.375
  WEIGHTS: ''
OUTPUT_DIR: logs/market1501/bagtricks_R50-ibn
SOLVER:
  AMP:
    ENABLED: true
  BASE_LR: 0.00035
  BIAS_LR_FACTOR: 1.0
  CHECKPOINT_PERIOD: 30
  CLIP_GRADIENTS:
    CLIP_TYPE: norm
    CLIP_VALUE: 5.0
    ENABLED: false
    NORM_TYPE: 2.0
  DELAY_EPOCHS: 0
  ETA_MIN_LR: 1.0e-07
  FREEZE_ITERS: 0
  GAMMA: 0.1
  HEADS_LR_FACTOR: 1.0
  IMS_PER_BATCH: 64
  MAX_EPOCH: 120
  MOMENTUM: 0.9
  NESTEROV: false
  OPT: Adam
  SCHED: MultiStepLR
  STEPS:
  - 40
  - 90
  WARMUP_FACTOR: 0.1
  WARMUP_ITERS: 2000
  WARMUP_METHOD: linear
  WEIGHT_DECAY: 0.0005
  WEIGHT_DECAY_BIAS: 0.0005
  WEIGHT_DECAY_NORM: 0.0005
TEST:
  AQE:
    ALPHA: 3.0
    ENABLED: false
    QE_K: 5
    QE_TIME: 1
  EVAL_PERIOD: 30
  FLIP:
    ENABLED: false
  IMS_PER_BATCH: 128
  METRIC: cosine
  RERANK:
    ENABLED: false
    K1: 20
    K2: 6
    LAMBDA: 0.3
  ROC:
    ENABLED: false
"""


@pytest.fixture
def fastreid_tree(tmp_path):
    """configs/Base-bagtricks.yml and configs/Market1501/bagtricks_R50-ibn.yml, as fast-reid lays them out."""
    write(tmp_path / "configs" / "Base-bagtricks.yml", BASE_BAGTRICKS)
    return write(tmp_path / "configs" / "Market1501" / "bagtricks_R50-ibn.yml", MARKET_BAGTRICKS_IBN)


def merge_yaml_texts(*texts: str) -> str:
    """Concatenate dumps section by section (yaml forbids duplicate top-level keys)."""
    import yaml

    merged = {}
    for text in texts:
        for key, value in yaml.safe_load(text).items():
            if isinstance(value, dict) and isinstance(merged.get(key), dict):
                stack = [(merged[key], value)]
                while stack:
                    target, update = stack.pop()
                    for k, v in update.items():
                        if isinstance(v, dict) and isinstance(target.get(k), dict):
                            stack.append((target[k], v))
                        else:
                            target[k] = v
            else:
                merged[key] = value
    return yaml.safe_dump(merged)


# -- defaults ---------------------------------------------------------------------------------------------------


def test_defaults_load_unfrozen_and_independent():
    cfg = get_cfg()
    assert cfg.MODEL.BACKBONE.NAME == "build_resnet_backbone"
    assert cfg.MODEL.BACKBONE.DEPTH == "50x"
    assert cfg.MODEL.LOSSES.NAME == ("CrossEntropyLoss", "TripletLoss")
    assert cfg.INPUT.SIZE_TRAIN == [256, 128]
    assert not cfg.is_frozen()
    cfg.SOLVER.BASE_LR = 1.0  # a fresh copy: mutating it must not leak into the next one
    assert get_cfg().SOLVER.BASE_LR == 3.5e-4


def test_load_config_without_file_equals_defaults_and_is_frozen():
    cfg = load_config()
    assert cfg == get_cfg()
    assert cfg.is_frozen()
    with pytest.raises(AttributeError):
        cfg.SOLVER.BASE_LR = 0.1
    with pytest.raises(AttributeError):
        cfg.MODEL.BACKBONE.DEPTH = "18x"
    assert cfg.SOLVER.BASE_LR == 3.5e-4


def test_load_config_can_leave_result_mutable():
    cfg = load_config(freeze=False)
    cfg.SEED = 5
    assert cfg.SEED == 5


# -- _BASE_ inheritance -----------------------------------------------------------------------------------------


def test_base_relative_to_the_including_file(tmp_path):
    write(tmp_path / "base" / "a.yml", "SOLVER:\n  BASE_LR: 0.01\n  MAX_EPOCH: 10\n")
    child = write(tmp_path / "exp" / "b.yml", "_BASE_: ../base/a.yml\nSOLVER:\n  MAX_EPOCH: 20\n")
    assert read_yaml_with_bases(child) == {"SOLVER": {"BASE_LR": 0.01, "MAX_EPOCH": 20}}
    cfg = load_config(child)
    assert cfg.SOLVER.BASE_LR == 0.01
    assert cfg.SOLVER.MAX_EPOCH == 20  # the child wins


def test_base_chained_two_levels(tmp_path):
    write(tmp_path / "grand.yml", "SEED: 1\nSOLVER:\n  BASE_LR: 0.1\n  STEPS: [1, 2]\n  MAX_EPOCH: 5\n")
    write(tmp_path / "sub" / "parent.yml", "_BASE_: ../grand.yml\nSEED: 2\nSOLVER:\n  BASE_LR: 0.2\n")
    child = write(tmp_path / "sub" / "deeper" / "child.yml", "_BASE_: ../parent.yml\nSOLVER:\n  BASE_LR: 0.3\n")
    cfg = load_config(child)
    assert cfg.SEED == 2  # from the parent, overriding the grandparent
    assert cfg.SOLVER.BASE_LR == 0.3  # from the child
    assert cfg.SOLVER.STEPS == [1, 2]  # only in the grandparent
    assert cfg.SOLVER.MAX_EPOCH == 5


def test_base_list_later_bases_win(tmp_path):
    write(tmp_path / "one.yml", "SEED: 1\nOUTPUT_DIR: one\n")
    write(tmp_path / "two.yml", "SEED: 2\n")
    child = write(tmp_path / "child.yml", "_BASE_: [one.yml, two.yml]\n")
    cfg = load_config(child)
    assert (cfg.SEED, cfg.OUTPUT_DIR) == (2, "one")


def test_base_absolute_path(tmp_path):
    base = write(tmp_path / "abs" / "base.yml", "SEED: 9\n")
    child = write(tmp_path / "other" / "child.yml", f"_BASE_: {base}\n")
    assert load_config(child).SEED == 9


@pytest.mark.parametrize("layout", ["self", "pair", "triangle"])
def test_base_loop_is_a_config_error(tmp_path, layout):
    if layout == "self":
        start = write(tmp_path / "a.yml", "_BASE_: a.yml\nSEED: 1\n")
    elif layout == "pair":
        start = write(tmp_path / "a.yml", "_BASE_: b.yml\n")
        write(tmp_path / "b.yml", "_BASE_: a.yml\n")
    else:
        start = write(tmp_path / "a.yml", "_BASE_: sub/b.yml\n")
        write(tmp_path / "sub" / "b.yml", "_BASE_: ../c.yml\n")
        write(tmp_path / "c.yml", "_BASE_: a.yml\n")
    with pytest.raises(ConfigError, match="loops back"):
        load_config(start)


def test_diamond_inheritance_is_not_a_loop(tmp_path):
    write(tmp_path / "root.yml", "SEED: 3\n")
    write(tmp_path / "left.yml", "_BASE_: root.yml\nOUTPUT_DIR: left\n")
    write(tmp_path / "right.yml", "_BASE_: root.yml\n")
    child = write(tmp_path / "child.yml", "_BASE_: [left.yml, right.yml]\n")
    cfg = load_config(child)
    assert (cfg.SEED, cfg.OUTPUT_DIR) == (3, "left")


def test_missing_base_names_the_path(tmp_path):
    child = write(tmp_path / "child.yml", "_BASE_: nowhere.yml\n")
    with pytest.raises(ConfigError, match="nowhere.yml"):
        load_config(child)


def test_missing_file_and_bad_yaml_are_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(str(tmp_path / "absent.yml"))
    bad = write(tmp_path / "bad.yml", "SOLVER: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid yaml"):
        load_config(bad)
    not_mapping = write(tmp_path / "list.yml", "- 1\n- 2\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(not_mapping)


def test_empty_file_gives_defaults(tmp_path):
    assert load_config(write(tmp_path / "empty.yml", "")) == get_cfg()


# -- fast-reid compatibility ------------------------------------------------------------------------------------


def test_fastreid_bagtricks_r50_ibn_merges_and_values_land(fastreid_tree, caplog):
    with caplog.at_level(logging.WARNING, logger=LOADER_LOGGER):
        cfg = load_config(fastreid_tree)
    assert not [r for r in caplog.records if r.name == LOADER_LOGGER]  # nothing fast-reid-only in these files
    m = cfg.MODEL
    assert m.META_ARCHITECTURE == "Baseline"
    assert (m.BACKBONE.NAME, m.BACKBONE.DEPTH, m.BACKBONE.LAST_STRIDE) == ("build_resnet_backbone", "50x", 1)
    assert m.BACKBONE.WITH_IBN is True  # from the Market1501 file, over the base's False
    assert m.BACKBONE.PRETRAIN is False and m.BACKBONE.FEAT_DIM == 2048
    assert (m.HEADS.NECK_FEAT, m.HEADS.POOL_LAYER, m.HEADS.CLS_LAYER) == ("before", "GlobalAvgPool", "Linear")
    assert m.HEADS.WITH_BNNECK is True
    assert tuple(m.LOSSES.NAME) == ("CrossEntropyLoss", "TripletLoss")
    assert m.LOSSES.CE.EPSILON == 0.1 and m.LOSSES.CE.SCALE == 1.0
    assert m.LOSSES.TRI.MARGIN == 0.3 and m.LOSSES.TRI.HARD_MINING is True
    assert m.LOSSES.TRI.NORM_FEAT is False and m.LOSSES.TRI.SCALE == 1.0
    assert cfg.INPUT.SIZE_TRAIN == [256, 128] and cfg.INPUT.SIZE_TEST == [256, 128]
    assert cfg.INPUT.REA.ENABLED is True and cfg.INPUT.PADDING.ENABLED is True and cfg.INPUT.FLIP.ENABLED is True
    d = cfg.DATALOADER
    assert (d.SAMPLER_TRAIN, d.NUM_INSTANCE, d.NUM_WORKERS) == ("NaiveIdentitySampler", 4, 8)
    s = cfg.SOLVER
    assert (s.OPT, s.MAX_EPOCH, s.IMS_PER_BATCH, s.SCHED) == ("Adam", 120, 64, "MultiStepLR")
    assert s.BASE_LR == 0.00035 and s.WEIGHT_DECAY == 0.0005
    assert list(s.STEPS) == [40, 90] and s.GAMMA == 0.1
    assert s.WARMUP_FACTOR == 0.1 and s.WARMUP_ITERS == 2000 and s.CHECKPOINT_PERIOD == 30
    assert s.AMP.ENABLED is True
    assert cfg.TEST.EVAL_PERIOD == 30 and cfg.TEST.IMS_PER_BATCH == 128
    assert cfg.CUDNN_BENCHMARK is True
    assert tuple(cfg.DATASETS.NAMES) == ("Market1501",) and tuple(cfg.DATASETS.TESTS) == ("Market1501",)
    assert cfg.OUTPUT_DIR == "logs/market1501/bagtricks_R50-ibn"
    # keys neither file sets keep compressreid's defaults
    assert cfg.MODEL.DEVICE == get_cfg().MODEL.DEVICE
    assert cfg.SOLVER.ETA_MIN_LR == get_cfg().SOLVER.ETA_MIN_LR


def test_fastreid_output_dir_dump_merges_with_one_warning(tmp_path, caplog):
    dump = write(tmp_path / "logs" / "config.yaml", merge_yaml_texts(SHARED_DUMP, FASTREID_ONLY_DUMP))
    with caplog.at_level(logging.WARNING, logger=LOADER_LOGGER):
        cfg = load_config(dump)
    warnings = [r for r in caplog.records if r.name == LOADER_LOGGER and r.levelno == logging.WARNING]
    assert len(warnings) == 1
    message = warnings[0].getMessage()
    for key in FASTREID_ONLY_EXPECTED:
        assert key in message
    assert f"{len(FASTREID_ONLY_EXPECTED)} fast-reid key(s)" in message
    # the shared values still land
    assert cfg.MODEL.HEADS.NUM_CLASSES == 751
    assert cfg.MODEL.DEVICE == "cuda"
    assert cfg.MODEL.BACKBONE.WITH_IBN is True
    assert cfg.MODEL.PIXEL_STD == pytest.approx([58.395, 57.12, 57.375])
    assert cfg.SOLVER.ETA_MIN_LR == 1e-7
    assert tuple(cfg.MODEL.LOSSES.NAME) == ("CrossEntropyLoss", "TripletLoss")
    assert not hasattr(cfg, "KD")
    assert "QUEUE_SIZE" not in cfg.MODEL and "CROP" not in cfg.INPUT and "SWA" not in cfg.SOLVER


def test_fastreid_only_keys_in_overrides_are_ignored_too(caplog):
    with caplog.at_level(logging.WARNING, logger=LOADER_LOGGER):
        cfg = load_config("", ["MODEL.QUEUE_SIZE", "4096", "SEED", "7"])
    assert cfg.SEED == 7
    messages = [r.getMessage() for r in caplog.records if r.name == LOADER_LOGGER]
    assert len(messages) == 1 and "MODEL.QUEUE_SIZE" in messages[0]


def test_no_warning_for_a_pure_compressreid_file(tmp_path, caplog):
    path = write(tmp_path / "plain.yml", "SEED: 3\n")
    with caplog.at_level(logging.WARNING, logger=LOADER_LOGGER):
        load_config(path)
    assert not [r for r in caplog.records if r.name == LOADER_LOGGER]


@pytest.mark.parametrize(
    "key, expected",
    [
        ("KD.EMA.MOMENTUM", True),
        ("INPUT.CROP.SIZE", True),
        ("MODEL.BACKBONE.WITH_SE", True),
        ("MODEL.BACKBONE.WITH_IBN", False),
        ("MODEL.KD", False),  # a prefix match must be anchored at the start
        ("SOLVER.BASE_LR", False),
    ],
)
def test_is_fastreid_only(key, expected):
    assert is_fastreid_only(key) is expected


def test_fastreid_master_dump_with_vit_backbone_keys_merges(tmp_path, caplog):
    vit_keys = """\
MODEL:
  BACKBONE:
    ATT_DROP_RATE: 0.0
    DROP_PATH_RATIO: 0.1
    DROP_RATIO: 0.0
    SIE_COE: 3.0
    STRIDE_SIZE:
    - 16
    - 16
"""
    dump = write(tmp_path / "config.yaml", merge_yaml_texts(SHARED_DUMP, FASTREID_ONLY_DUMP, vit_keys))
    with caplog.at_level(logging.WARNING, logger=LOADER_LOGGER):
        load_config(dump)
    assert "MODEL.BACKBONE.SIE_COE" in caplog.text


# -- validation -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, wrong, suggestion",
    [
        ("MODEL:\n  BACKBONE:\n    DEPHT: 50x\n", "MODEL.BACKBONE.DEPHT", "MODEL.BACKBONE.DEPTH"),
        ("MODEL:\n  BACKBONE:\n    WITH_IBNN: true\n", "MODEL.BACKBONE.WITH_IBNN", "MODEL.BACKBONE.WITH_IBN"),
        ("SOLVER:\n  BASE_LRR: 0.1\n", "SOLVER.BASE_LRR", "SOLVER.BASE_LR"),
        ("TEST:\n  IMS_PER_BACH: 8\n", "TEST.IMS_PER_BACH", "TEST.IMS_PER_BATCH"),
    ],
)
def test_misspelled_key_names_key_and_closest(tmp_path, text, wrong, suggestion):
    path = write(tmp_path / "typo.yml", text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert f"'{wrong}'" in message
    assert f"did you mean '{suggestion}'" in message
    assert "typo.yml" in message


def test_misspelled_key_in_overrides():
    with pytest.raises(ConfigError, match=r"'SOLVER\.MAX_EPOHC'.*did you mean 'SOLVER\.MAX_EPOCH'"):
        load_config("", ["SOLVER.MAX_EPOHC", "3"])


def test_unknown_key_far_from_everything_has_no_suggestion(tmp_path):
    path = write(tmp_path / "odd.yml", "MODEL:\n  ZZZZZZZZZZZZ: 1\n")
    with pytest.raises(ConfigError, match="MODEL.ZZZZZZZZZZZZ") as info:
        load_config(path)
    assert "did you mean" not in str(info.value)


def test_misspelled_section_suggests_the_section(tmp_path):
    path = write(tmp_path / "typo.yml", "SOLVR:\n  BASE_LR: 0.1\n")
    with pytest.raises(ConfigError, match=r"did you mean 'SOLVER'\?"):
        load_config(path)


@pytest.mark.parametrize(
    "text, key",
    [
        ("SOLVER:\n  BASE_LR: fast\n", "SOLVER.BASE_LR"),
        ("SOLVER:\n  MAX_EPOCH: 1.5\n", "SOLVER.MAX_EPOCH"),
        ("MODEL:\n  BACKBONE:\n    WITH_IBN: 1\n", "MODEL.BACKBONE.WITH_IBN"),
        ("SOLVER:\n  BASE_LR: true\n", "SOLVER.BASE_LR"),
        ("MODEL:\n  BACKBONE:\n    DEPTH: [50]\n", "MODEL.BACKBONE.DEPTH"),
        ("SOLVER:\n  STEPS: 40\n", "SOLVER.STEPS"),
        ("INPUT:\n  PADDING: 10\n", "INPUT.PADDING"),  # a section given a scalar
    ],
)
def test_wrong_value_type_names_the_key(tmp_path, text, key):
    path = write(tmp_path / "types.yml", text)
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        load_config(path)


def test_int_for_float_key_is_accepted_as_float(tmp_path):
    text = "SOLVER:\n  BASE_LR: 1\n  GAMMA: 0\nMODEL:\n  LOSSES:\n    CE:\n      SCALE: 2\n"
    cfg = load_config(write(tmp_path / "ints.yml", text))
    assert cfg.SOLVER.BASE_LR == 1.0 and type(cfg.SOLVER.BASE_LR) is float
    assert cfg.SOLVER.GAMMA == 0.0 and type(cfg.SOLVER.GAMMA) is float
    assert type(cfg.MODEL.LOSSES.CE.SCALE) is float


def test_yaml_exponent_without_dot_is_a_float(tmp_path):
    # PyYAML reads "1e-7" as a string; it must still land as the float it means
    cfg = load_config(write(tmp_path / "exp.yml", "SOLVER:\n  ETA_MIN_LR: 1e-7\n"))
    assert cfg.SOLVER.ETA_MIN_LR == 1e-7 and type(cfg.SOLVER.ETA_MIN_LR) is float


def test_tuple_and_list_are_interchangeable(tmp_path):
    cfg = load_config(write(tmp_path / "seq.yml", "DATASETS:\n  NAMES: [A, B]\nSOLVER:\n  STEPS: (10, 20)\n"))
    assert tuple(cfg.DATASETS.NAMES) == ("A", "B")
    assert list(cfg.SOLVER.STEPS) == [10, 20]


# -- command-line overrides -------------------------------------------------------------------------------------


def test_overrides_apply_after_the_file(fastreid_tree):
    cfg = load_config(
        fastreid_tree,
        ["SOLVER.BASE_LR", "0.01", "MODEL.BACKBONE.WITH_IBN", "False", "SOLVER.STEPS", "[10, 20]",
         "OUTPUT_DIR", "elsewhere", "DATASETS.NAMES", "('Synthetic',)"],
    )
    assert cfg.SOLVER.BASE_LR == 0.01
    assert cfg.MODEL.BACKBONE.WITH_IBN is False
    assert list(cfg.SOLVER.STEPS) == [10, 20]
    assert cfg.OUTPUT_DIR == "elsewhere"
    assert tuple(cfg.DATASETS.NAMES) == ("Synthetic",)
    assert cfg.SOLVER.MAX_EPOCH == 120  # untouched file value
    assert cfg.is_frozen()


def test_override_int_for_float_key():
    cfg = load_config("", ["SOLVER.BASE_LR", "2"])
    assert cfg.SOLVER.BASE_LR == 2.0 and type(cfg.SOLVER.BASE_LR) is float


def test_odd_number_of_overrides_is_a_config_error():
    with pytest.raises(ConfigError, match="odd"):
        load_config("", ["SOLVER.BASE_LR", "0.1", "SEED"])


def test_override_wrong_type_names_the_key():
    with pytest.raises(ConfigError, match=r"SEED"):
        load_config("", ["SEED", "abc"])


# -- dumping ----------------------------------------------------------------------------------------------------


def test_dump_then_reload_gives_an_equal_config(fastreid_tree, tmp_path):
    cfg = load_config(fastreid_tree, ["SEED", "11", "DATASETS.NAMES", "('A', 'B')"])
    out = tmp_path / "run" / "config.yaml"
    assert dump_config(cfg, str(out)) == str(out)
    text = out.read_text()
    assert "bagtricks_R50-ibn" in text and "_BASE_" not in text
    again = load_config(str(out))
    assert again == cfg
    assert again.SEED == 11 and tuple(again.DATASETS.NAMES) == ("A", "B")
    assert again.MODEL.BACKBONE.WITH_IBN is True


def test_dump_leaves_no_temporary_files(tmp_path):
    dump_config(get_cfg(), str(tmp_path / "config.yaml"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.yaml"]


def test_dump_writes_the_config_unchanged(tmp_path):
    cfg = load_config("", ["MODEL.HEADS.NUM_CLASSES", "0"])
    dump_config(cfg, str(tmp_path / "c.yaml"))
    assert load_config(str(tmp_path / "c.yaml")).MODEL.HEADS.NUM_CLASSES == 0


MODELZOO_BASELINE = """\
    MODEL:
      META_ARCHITECTURE: 'Baseline'
      BACKBONE:
        NAME: "build_resnet_backbone"
        DEPTH: 50
        WITH_IBN: True
        PRETRAIN: False
      HEADS:
        NAME: "BNneckHead"
        NECK_FEAT: "after"
        CLS_LAYER: "circle"
        POOL_LAYER: "gempool"
        IN_FEAT: 2048
        SCALE: 64
        MARGIN: 0.35
    """


def test_modelzoo_generation_values_are_translated_to_v1_names_and_logged(tmp_path, caplog):
    """fast-reid's model-zoo generation wrote DEPTH 50, BNneckHead, gempool, circle (its Base-Strongerbaseline.yml)."""
    path = tmp_path / "Base-Strongerbaseline.yml"
    path.write_text(textwrap.dedent(MODELZOO_BASELINE))
    with caplog.at_level(logging.INFO, logger="compressreid.config.loading"):
        cfg = load_config(str(path))
    h = cfg.MODEL.HEADS
    assert cfg.MODEL.BACKBONE.DEPTH == "50x"
    assert (h.NAME, h.POOL_LAYER, h.CLS_LAYER) == ("EmbeddingHead", "GeneralizedMeanPoolingP", "CircleSoftmax")
    assert (h.EMBEDDING_DIM, h.REDUCTION_BN_RELU) == (0, False)  # a Baseline's IN_FEAT is only the backbone width
    assert "DEPTH: 50 -> 50x" in caplog.text and "BNneckHead -> EmbeddingHead" in caplog.text


def test_modelzoo_mgn_heads_become_reductions_with_bn_relu(tmp_path):
    path = tmp_path / "mgn.yml"
    path.write_text(textwrap.dedent(MODELZOO_BASELINE).replace("'Baseline'", "'MGN'").replace("2048", "256"))
    h = load_config(str(path)).MODEL.HEADS
    assert (h.NAME, h.EMBEDDING_DIM, h.REDUCTION_BN_RELU) == ("EmbeddingHead", 256, True)


def test_a_modelzoo_value_compressreid_cannot_build_keeps_its_name_in_the_error(tmp_path):
    from compressreid.modeling import build_model

    path = tmp_path / "avgmax.yml"
    path.write_text(textwrap.dedent(MODELZOO_BASELINE).replace('"gempool"', '"avgmaxpool"'))
    with pytest.raises(ConfigError, match="POOL_LAYER 'avgmaxpool' is not supported"):
        build_model(load_config(str(path)), 5)


def test_reduction_bn_relu_without_a_reduction_is_a_config_error():
    from compressreid.modeling import build_model

    with pytest.raises(ConfigError, match="REDUCTION_BN_RELU needs a reduction"):
        build_model(load_config("", ["MODEL.HEADS.REDUCTION_BN_RELU", "True", "MODEL.BACKBONE.DEPTH", "18x"]), 5)


@pytest.mark.parametrize("pool, expected", [("gempool", "GeneralizedMeanPooling"), ("gempoolP", "GeneralizedMeanPoolingP"),
                                            ("avgpool", "GlobalAvgPool")])
def test_fastreid_v1_0_pool_names_keep_their_own_meaning(tmp_path, pool, expected):
    """v1.0 (EmbeddingHead, string DEPTH) spelled GeM with a fixed p "gempool"; v0.x used that name for learnable p."""
    path = tmp_path / "v1_0.yml"
    path.write_text(f"MODEL:\n  BACKBONE:\n    DEPTH: 50x\n  HEADS:\n    NAME: EmbeddingHead\n    POOL_LAYER: {pool}\n"
                    "    CLS_LAYER: circleSoftmax\n")
    h = load_config(str(path)).MODEL.HEADS
    assert (h.POOL_LAYER, h.CLS_LAYER) == (expected, "CircleSoftmax")


def test_modelzoo_mgn_without_a_heads_section_gets_that_generations_default_branch_width(tmp_path):
    path = tmp_path / "mgn.yml"
    path.write_text("MODEL:\n  META_ARCHITECTURE: MGN\n  BACKBONE:\n    DEPTH: 50\n")
    h = load_config(str(path)).MODEL.HEADS
    assert (h.NAME, h.EMBEDDING_DIM, h.REDUCTION_BN_RELU) == ("EmbeddingHead", 2048, True)


def test_command_line_overrides_are_taken_as_written():
    assert load_config("", ["MODEL.HEADS.POOL_LAYER", "avgpool"]).MODEL.HEADS.POOL_LAYER == "avgpool"
