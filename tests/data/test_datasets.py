"""Tests for the folder-layout ReID loaders: counts per split, parsing, seeded draws and every bad-input error."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from compressreid.data.datasets import DATASETS, ReIDDataset, build_dataset, merge_train_sets
from compressreid.data.datasets.msmt17 import MSMT17
from compressreid.data.records import DatasetSplits, ImageRecord
from compressreid.errors import ConfigError, DataError

# name -> (layout family, {split: (images, ids, cameras)}, (split, path below root, pid, camid))
EXPECTED = {
    "Market1501": ("market", {"train": (4, 2, 3), "query": (2, 2, 2), "gallery": (4, 3, 3)},
                   ("query", "market1501/Market-1501-v15.09.15/query/0010_c1s1_001051_00.jpg", 10, 0)),
    "DukeMTMC": ("duke", {"train": (3, 2, 3), "query": (2, 2, 2), "gallery": (3, 2, 3)},
                 ("query", "DukeMTMC-reID/query/0008_c8_f0076111.jpg", 8, 7)),
    "MSMT17": ("msmt17_v1", {"train": (3, 2, 3), "query": (2, 2, 2), "gallery": (3, 2, 3)},
               ("gallery", "MSMT17/MSMT17_V1/test/0001/0001_001_15_0304noon_0004_0.jpg", 1, 14)),
    "MSMT17V1": ("msmt17_v1", {"train": (3, 2, 3), "query": (2, 2, 2), "gallery": (3, 2, 3)},
                 ("train", "MSMT17/MSMT17_V1/train/0000/0000_001_03_0303morning_0016_0.jpg", 0, 2)),
    "MSMT17V2": ("msmt17_v2", {"train": (3, 2, 3), "query": (2, 2, 2), "gallery": (3, 2, 3)},
                 ("query", "MSMT17/MSMT17_V2/mask_test_v2/0001/0001_000_09_0303noon_0002_0.jpg", 1, 8)),
    "CUHK03": ("cuhk03", {"train": (3, 1, 2), "query": (2, 2, 1), "gallery": (4, 2, 2)},
               ("gallery", "cuhk03/images_detected/2_001_2_07.png", 3, 1)),
    "CUHK03Labeled": ("cuhk03", {"train": (3, 1, 2), "query": (2, 2, 1), "gallery": (4, 2, 2)},
                      ("query", "cuhk03/images_labeled/1_002_1_01.png", 2, 0)),
    "VeRi": ("veri", {"train": (3, 2, 3), "query": (2, 2, 2), "gallery": (3, 2, 3)},
             ("gallery", "veri/image_test/0006_c020_00020120_0.jpg", 6, 19)),
    "SmallVehicleID": ("vehicleid", {"train": (4, 3, 1), "query": (24, 6, 1), "gallery": (6, 6, 1)},
                       ("train", "vehicleid/image/00003.jpg", 2, 0)),
    "MediumVehicleID": ("vehicleid", {"train": (4, 3, 1), "query": (28, 7, 1), "gallery": (7, 7, 1)},
                        ("train", "vehicleid/image/00004.jpg", 3, 0)),
    "LargeVehicleID": ("vehicleid", {"train": (4, 3, 1), "query": (32, 8, 1), "gallery": (8, 8, 1)},
                       ("train", "vehicleid/image/00001.jpg", 1, 0)),
    "SmallVeRiWild": ("veriwild", {"train": (3, 2, 2), "query": (1, 1, 1), "gallery": (2, 1, 2)},
                      ("gallery", "VERI-Wild/images/00010/000102.jpg", 10, 174)),
    "MediumVeRiWild": ("veriwild", {"train": (3, 2, 2), "query": (2, 2, 2), "gallery": (2, 2, 2)},
                       ("query", "VERI-Wild/images/00011/000110.jpg", 11, 5)),
    "LargeVeRiWild": ("veriwild", {"train": (3, 2, 2), "query": (3, 3, 3), "gallery": (3, 3, 3)},
                      ("train", "VERI-Wild/images/00001/000002.jpg", 1, 3)),
}


def stats(records):
    return len(records), len({r.pid for r in records}), len({r.camid for r in records})


def error_of(name: str, root: Path, seed: int = 0) -> str:
    with pytest.raises(DataError) as info:
        build_dataset(name, str(root), seed=seed).load()
    message = str(info.value)
    assert "\n" not in message
    return message


def test_every_registered_dataset_has_a_case():
    # Synthetic renders its own tree; it is covered by test_synthetic_dataset_reads_its_render below
    assert set(EXPECTED) | {"Synthetic"} == set(DATASETS.names())


def test_synthetic_dataset_reads_its_render_with_black_clothes_meta(tmp_path):
    from compressreid.config import get_cfg
    from compressreid.data.datasets import build_dataset_from_config

    cfg = get_cfg()
    cfg.DATASETS.ROOT = str(tmp_path)
    s = cfg.DATASETS.SYNTHETIC
    s.NUM_TRAIN_IDS, s.NUM_TEST_IDS, s.NUM_DISTRACTORS, s.SIZE, s.BLACK_CLOTHES_SHARE = 6, 4, 3, [32, 16], 0.5
    dataset = build_dataset_from_config("Synthetic", cfg)
    dataset.progress = False
    splits = dataset.load()
    assert len({r.pid for r in splits.train}) == 6 and len({r.pid for r in splits.query}) == 4
    assert {r.pid for r in splits.train}.isdisjoint({r.pid for r in splits.query})
    assert sum(r.pid == 0 for r in splits.gallery) == 3
    black = {r.pid for r in splits.train + splits.query if r.meta["black_clothes"]}
    assert 0 < len(black) < 10
    again = build_dataset_from_config("Synthetic", cfg).load()  # cached: same records, no re-render
    assert [r.path for r in again.gallery] == [r.path for r in splits.gallery]


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_load_counts_and_parsing(name, fake_layout):
    family, counts, (split, rel_path, pid, camid) = EXPECTED[name]
    root = fake_layout(family)
    dataset = build_dataset(name, str(root))
    assert isinstance(dataset, ReIDDataset) and dataset.expected_layout
    splits = dataset.load()
    assert isinstance(splits, DatasetSplits) and splits.name == name
    for split_name, expected in counts.items():
        records = getattr(splits, split_name)
        assert stats(records) == expected, split_name
        assert [r.path for r in records] == sorted(r.path for r in records)
        assert all(os.path.isabs(r.path) and isinstance(r.camid, int) and r.camid >= 0 for r in records)
    known = {r.path: r for r in getattr(splits, split)}[str(root / rel_path)]
    assert (known.pid, known.camid) == (pid, camid)


def test_market_junk_and_distractors(fake_layout):
    splits = build_dataset("Market1501", str(fake_layout("market"))).load()
    for split in ("train", "query", "gallery"):
        assert all(r.pid != -1 for r in getattr(splits, split))
    assert all(r.pid != 0 for r in splits.train + splits.query)
    assert [r for r in splits.gallery if r.pid == 0][0].path.endswith("0000_c1s1_000000_01.jpg")


def test_market_without_release_subfolder(fake_layout):
    root = fake_layout("market", release_subfolder=False)
    splits = build_dataset("Market1501", str(root)).load()
    assert stats(splits.gallery) == (4, 3, 3)
    assert splits.query[0].path.startswith(str(root / "market1501" / "query"))


def test_msmt17_picks_the_version_folder_present(fake_layout):
    root = fake_layout("msmt17_v2")
    splits = build_dataset("MSMT17", str(root)).load()
    assert all("/MSMT17_V2/mask_train_v2/" in r.path for r in splits.train)
    assert "MSMT17_V1" in error_of("MSMT17V1", root)  # an explicit version does not fall back


def test_msmt17_val_list_joins_train_only_with_combineall(fake_layout):
    # fast-reid trains on list_train.txt alone unless COMBINEALL; published numbers depend on it
    root = fake_layout("msmt17_v1")
    default = build_dataset("MSMT17", str(root)).load()
    combined = MSMT17(str(root), include_val=True).load()
    assert len(combined.train) == len(default.train) + 1
    assert not any("0303afternoon_0200" in r.path for r in default.train)


def test_cuhk03_extracts_real_pngs_once(fake_layout, cuhk03_truth):
    root = fake_layout("cuhk03")
    build_dataset("CUHK03", str(root)).load()
    image_dir = root / "cuhk03" / "images_detected"
    assert sorted(os.listdir(image_dir)) == cuhk03_truth.names
    assert not (root / "cuhk03" / "images_labeled").exists()  # only the requested box type is extracted
    campair, pid, cell = 2, 1, 6
    decoded = np.asarray(Image.open(image_dir / f"{campair}_{pid:03d}_2_{cell + 1:02d}.png"))
    np.testing.assert_array_equal(decoded, cuhk03_truth.pixels(campair, pid, cell, labeled=False))
    assert sum(len(cells) for cells in cuhk03_truth.cells.values()) == len(os.listdir(image_dir))
    # The extracted folder is trusted from now on: the raw .mat is no longer needed.
    os.remove(root / "cuhk03" / "cuhk03_release" / "cuhk-03.mat")
    assert stats(build_dataset("CUHK03", str(root)).load().gallery) == (4, 2, 2)
    assert "cuhk-03.mat" in error_of("CUHK03Labeled", root)


def test_cuhk03_labeled_reads_labeled_boxes(fake_layout, cuhk03_truth):
    root = fake_layout("cuhk03")
    build_dataset("CUHK03Labeled", str(root)).load()
    decoded = np.asarray(Image.open(root / "cuhk03" / "images_labeled" / "1_001_1_01.png"))
    np.testing.assert_array_equal(decoded, cuhk03_truth.pixels(1, 1, 0, labeled=True))


def test_vehicleid_gallery_draw_is_seeded(fake_layout):
    root = str(fake_layout("vehicleid"))

    def draw(seed):
        splits = build_dataset("SmallVehicleID", root, seed=seed).load()
        assert {r.camid for r in splits.query} == {0} and {r.camid for r in splits.gallery} == {1}
        assert not {r.path for r in splits.query} & {r.path for r in splits.gallery}
        return [r.path for r in splits.gallery]

    assert draw(0) == draw(0)
    assert draw(0) != draw(1)


def test_unknown_name_is_a_config_error():
    with pytest.raises(ConfigError) as info:
        build_dataset("Market1502", "/nowhere")
    assert "Market1502" in str(info.value) and "Market1501" in str(info.value) and "VeRi" in str(info.value)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_missing_dataset_folder(name, tmp_path):
    message = error_of(name, tmp_path)
    dataset = build_dataset(name, str(tmp_path))
    assert name in message and str(tmp_path) in message and dataset.expected_layout in message


def test_missing_split_folder(fake_layout):
    root = fake_layout("market")
    shutil.rmtree(root / "market1501" / "Market-1501-v15.09.15" / "query")
    message = error_of("Market1501", root)
    assert "query" in message and "not found" in message


def test_missing_list_file(fake_layout):
    root = fake_layout("msmt17_v1")
    os.remove(root / "MSMT17" / "MSMT17_V1" / "list_gallery.txt")
    assert "list_gallery.txt" in error_of("MSMT17", root)
    root = fake_layout("vehicleid")
    os.remove(root / "vehicleid" / "train_test_split" / "test_list_1600.txt")
    assert "test_list_1600.txt" in error_of("MediumVehicleID", root)


@pytest.mark.parametrize("folder, split", [("bounding_box_train", "train"), ("query", "query"),
                                           ("bounding_box_test", "gallery")])
def test_empty_split(folder, split, fake_layout):
    root = fake_layout("duke")
    for entry in (root / "DukeMTMC-reID" / folder).iterdir():
        entry.unlink()
    message = error_of("DukeMTMC", root)
    assert "DukeMTMC" in message and f"'{split}'" in message


def test_empty_list_split(fake_layout):
    root = fake_layout("veriwild")
    (root / "VERI-Wild" / "train_test_split" / "test_3000_query.txt").write_text("")
    message = error_of("SmallVeRiWild", root)
    assert "SmallVeRiWild" in message and "'query'" in message


def test_unparsable_names(fake_layout):
    root = fake_layout("market")
    Image.new("RGB", (4, 8)).save(root / "market1501" / "Market-1501-v15.09.15" / "query" / "holiday.jpg")
    message = error_of("Market1501", root)
    assert "holiday.jpg" in message and "0002_c1s1_000451_03.jpg" in message
    root = fake_layout("veri")
    (root / "veri" / "image_train" / "0001_cam1.jpg").write_bytes(b"")
    assert "0001_cam1.jpg" in error_of("VeRi", root)


def test_unparsable_list_lines(fake_layout):
    root = fake_layout("msmt17_v1")
    with open(root / "MSMT17" / "MSMT17_V1" / "list_query.txt", "a") as handle:
        handle.write("0002/0002_000_xx_0303noon_0009_0.jpg 2\n")
    message = error_of("MSMT17", root)
    assert "0002_000_xx_0303noon_0009_0.jpg" in message and "expected pattern" in message
    root = fake_layout("vehicleid")
    with open(root / "vehicleid" / "train_test_split" / "train_list.txt", "a") as handle:
        handle.write("00009\n")
    assert "line 5" in error_of("SmallVehicleID", root)
    root = fake_layout("veriwild")
    with open(root / "VERI-Wild" / "train_test_split" / "train_list.txt", "a") as handle:
        handle.write("00003/000999\n")
    assert "000999" in error_of("LargeVeRiWild", root)


def test_merge_train_sets_namespaces_identities():
    def splits(name, pids):
        train = [ImageRecord(path=f"/{name}/{i}.jpg", pid=pid, camid=i) for i, pid in enumerate(pids)]
        return DatasetSplits(name=name, train=train, query=[], gallery=[])

    merged = merge_train_sets([splits("Market1501", [1, 2]), splits("DukeMTMC", [1])])
    assert [r.pid for r in merged] == ["Market1501_1", "Market1501_2", "DukeMTMC_1"]
    assert [r.camid for r in merged] == [0, 1, 0]
    assert merged[2].path == "/DukeMTMC/0.jpg"
    with pytest.raises(DataError, match="Market1501"):
        merge_train_sets([splits("Market1501", [1]), splits("Market1501", [2])])
