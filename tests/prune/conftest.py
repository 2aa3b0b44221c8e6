"""A tiny trained source run (synthetic data, eighth-width ResNet-18) for the pruning tool tests."""

from __future__ import annotations

import os

import pytest

from compressreid.config import dump_config, get_cfg
from compressreid.engine.run_dir import RunDirectory
from compressreid.engine.supervised import train_supervised

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# Tiny synthetic benchmark: 16 training / 20 test identities, 64x32 inputs, CPU, no workers. The source trains
# for SOURCE_ITERS (~8 s) to ~27 mAP, so a scrambled layer (~12) and benign pruning (~22) are far apart.
DATA = [
    "DATASETS.SYNTHETIC.NUM_TRAIN_IDS", "16", "DATASETS.SYNTHETIC.NUM_TEST_IDS", "20",
    "DATASETS.SYNTHETIC.NUM_DISTRACTORS", "4", "DATASETS.SYNTHETIC.SIZE", "[64, 32]",
    "INPUT.SIZE_TRAIN", "[64, 32]", "INPUT.SIZE_TEST", "[64, 32]", "SOLVER.IMS_PER_BATCH", "16",
    "DATALOADER.NUM_WORKERS", "0", "TEST.IMS_PER_BATCH", "64", "TEST.ROC.ENABLED", "False",
    "TEST.WORST_QUERIES", "0", "MODEL.DEVICE", "cpu",
]
# ResNet-18 at an eighth of the width (base 8 channels, 64-channel embedding)
STUDENT = ["MODEL.BACKBONE.WIDTH", "0.125", "MODEL.BACKBONE.FEAT_DIM", "64"]
SOURCE_ITERS = 300


@pytest.fixture(scope="package")
def source_run(tmp_path_factory):
    """A finished run folder (config.yaml, model_final.pth) of a briefly trained tiny student, and its work dir."""
    work = tmp_path_factory.mktemp("prune")
    cfg = get_cfg()
    cfg.merge_from_file(os.path.join(REPO, "configs", "synthetic", "distill_r18.yml"))
    cfg.merge_from_list([*DATA, *STUDENT, "DATASETS.ROOT", str(work / "datasets"), "OUTPUT_DIR", str(work / "source"),
                         "SOLVER.MAX_EPOCH", "1", "SOLVER.ITERS_PER_EPOCH", str(SOURCE_ITERS),
                         "SOLVER.WARMUP_ITERS", "5", "SOLVER.CHECKPOINT_PERIOD", "1", "TEST.GATES", "()"])
    cfg.freeze()
    run = RunDirectory(cfg.OUTPUT_DIR).start(cfg, "train_teacher")
    train_supervised(cfg, run, progress=False)
    dump_config(cfg, run.file("config.yaml"))
    run.finish({})  # accepted (no gates): later stages refuse runs that are not
    return work, run.path
