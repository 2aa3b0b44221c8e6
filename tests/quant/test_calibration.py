"""PTQ calibration data (compressreid.quant.calibration): a seeded sample of the TRAINING split only, at the test
transform; refusals for an empty set; ONNX Runtime's reader protocol."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from compressreid.config import get_cfg
from compressreid.data.build import TrainData
from compressreid.data.datasets import build_dataset_from_config
from compressreid.errors import DataError
from compressreid.quant import calibration
from compressreid.quant.calibration import BatchReader, calibration_batches

TINY_DATA = [
    "DATASETS.NAMES", '("Synthetic",)', "DATASETS.TESTS", '("Synthetic",)',
    "DATASETS.SYNTHETIC.NUM_TRAIN_IDS", "8", "DATASETS.SYNTHETIC.NUM_TEST_IDS", "6",
    "DATASETS.SYNTHETIC.NUM_DISTRACTORS", "4", "DATASETS.SYNTHETIC.SIZE", "[64, 32]",
    "INPUT.SIZE_TEST", "[32, 16]", "DATALOADER.NUM_WORKERS", "0", "TEST.IMS_PER_BATCH", "64",
]


@pytest.fixture(scope="module")
def cfg(tmp_path_factory):
    cfg = get_cfg()
    cfg.merge_from_list([*TINY_DATA, "DATASETS.ROOT", str(tmp_path_factory.mktemp("datasets"))])
    cfg.freeze()
    return cfg


@pytest.fixture(scope="module")
def splits(cfg):
    return build_dataset_from_config("Synthetic", cfg).load()


@pytest.fixture
def recorded(monkeypatch):
    """Every record the calibration loader is asked to read."""
    seen = []
    real = calibration.build_test_loader

    def spy(loader_cfg, records):
        seen.extend(records)
        return real(loader_cfg, records)

    monkeypatch.setattr(calibration, "build_test_loader", spy)
    return seen


def test_calibration_reads_only_training_images(cfg, splits, recorded):
    batches = calibration_batches(cfg, num_images=10, batch_size=4, seed=0)
    assert [len(b) for b in batches] == [4, 4, 2]
    assert len(recorded) == 10 and len({r.path for r in recorded}) == 10  # sampled without replacement
    train = {r.path for r in splits.train}
    test = {r.path for r in splits.query + splits.gallery}
    assert train and test and not train & test
    assert {r.path for r in recorded} <= train
    assert not {r.path for r in recorded} & test


def test_calibration_images_use_the_test_transform(cfg):
    (batch,) = calibration_batches(cfg, num_images=3, batch_size=8, seed=0)
    assert batch.shape == (3, 3, 32, 16) and batch.dtype == torch.float32
    assert 0.0 <= float(batch.min()) and float(batch.max()) <= 255.0 and float(batch.max()) > 1.0  # 0-255 RGB


def test_calibration_is_seeded(cfg, recorded):
    first = calibration_batches(cfg, num_images=6, batch_size=4, seed=3)
    again = calibration_batches(cfg, num_images=6, batch_size=4, seed=3)
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    paths_seed3 = [r.path for r in recorded]
    assert paths_seed3[:6] == paths_seed3[6:]
    recorded.clear()
    calibration_batches(cfg, num_images=6, batch_size=4, seed=4)
    assert {r.path for r in recorded} != set(paths_seed3)


def test_more_images_than_the_training_split_uses_all_of_it(cfg, splits, recorded):
    batches = calibration_batches(cfg, num_images=10_000, batch_size=64, seed=0)
    assert sum(len(b) for b in batches) == len(splits.train)
    assert sorted(r.path for r in recorded) == sorted(r.path for r in splits.train)


@pytest.mark.parametrize("num_images", [0, -5])
def test_no_calibration_images_is_a_data_error(cfg, num_images):
    with pytest.raises(DataError, match=f"NUM_IMAGES is {num_images}: expected at least 1 training image"):
        calibration_batches(cfg, num_images=num_images, batch_size=4)


def test_empty_training_split_is_a_data_error(cfg, monkeypatch):
    monkeypatch.setattr(calibration, "load_train_data", lambda _cfg: TrainData([], [], 0, {}))
    with pytest.raises(DataError, match=r"calibration set is empty: the training split of \['Synthetic'\]"):
        calibration_batches(cfg, num_images=4, batch_size=4)


def test_empty_training_split_on_disk_is_a_data_error(cfg, tmp_path):
    """A Market-1501 tree whose bounding_box_train folder is empty: refused, not calibrated on test images."""
    from PIL import Image

    base = tmp_path / "market1501"
    (base / "bounding_box_train").mkdir(parents=True)
    for folder, name in (("query", "0001_c1s1_000001_00.jpg"), ("bounding_box_test", "0001_c2s1_000001_00.jpg")):
        (base / folder).mkdir()
        Image.new("RGB", (16, 32), (90, 40, 20)).save(base / folder / name)
    market = cfg.clone()
    market.defrost()
    market.merge_from_list(["DATASETS.NAMES", '("Market1501",)', "DATASETS.ROOT", str(tmp_path)])
    with pytest.raises(DataError, match="'train' has no identities"):
        calibration_batches(market, num_images=4, batch_size=4)


def test_batch_reader_follows_the_ort_protocol_and_rewinds():
    batches = [torch.full((2, 3, 4, 2), 7.0, dtype=torch.float64), torch.zeros(1, 3, 4, 2)]
    reader = BatchReader("images", batches)
    first = reader.get_next()
    assert set(first) == {"images"} and first["images"].dtype == np.float32 and first["images"].shape == (2, 3, 4, 2)
    assert reader.get_next()["images"].shape == (1, 3, 4, 2)
    assert reader.get_next() is None and reader.get_next() is None
    reader.rewind()
    assert float(reader.get_next()["images"][0, 0, 0, 0]) == 7.0
