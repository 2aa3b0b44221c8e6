"""Synthetic benchmark: determinism, Market-1501 naming, split invariants, atomic writes and parameter checks."""

from __future__ import annotations

import hashlib
import os
import re
from collections import defaultdict

import numpy as np
import pytest

from compressreid.data.datasets import build_dataset
from compressreid.data.synthetic import (
    VIEWS,
    SyntheticParams,
    build_cameras,
    contact_sheet,
    load_identity_metadata,
    render_pedestrian,
    render_synthetic_benchmark,
    sample_traits,
    synthetic_folder_name,
)
from compressreid.data.synthetic import writer
from compressreid.errors import ConfigError

TINY = SyntheticParams(num_train_ids=6, num_test_ids=4, num_distractors=5, black_clothes_share=0.5, height=32,
                       width=16, seed=3)
MARKET_NAME = re.compile(r"^(\d{4})_c(\d)s1_(\d{6})_(\d{2})\.jpg$")
FOLDERS = ("bounding_box_train", "query", "bounding_box_test")


def tree_digest(root: str) -> str:
    """Hash of every relative path and file content under ``root``."""
    digest = hashlib.sha256()
    for folder, _, files in sorted(os.walk(root)):
        for name in sorted(files):
            path = os.path.join(folder, name)
            digest.update(os.path.relpath(path, root).encode())
            with open(path, "rb") as handle:
                digest.update(handle.read())
    return digest.hexdigest()


def parse_tree(out_root: str):
    """{folder: [(pid, cam), ...]} from the file names, asserting each one matches the Market-1501 pattern."""
    parsed = {}
    for folder in FOLDERS:
        names = os.listdir(os.path.join(out_root, "market1501", folder))
        assert names, folder
        entries = []
        for name in names:
            match = MARKET_NAME.match(name)
            assert match, name
            entries.append((int(match.group(1)), int(match.group(2))))
        parsed[folder] = entries
    return parsed


@pytest.fixture(scope="module")
def tiny_root(tmp_path_factory):
    out_root = str(tmp_path_factory.mktemp("synthetic") / synthetic_folder_name(TINY))
    return render_synthetic_benchmark(out_root, TINY, progress=False, workers=2)


def test_same_seed_is_byte_identical_serial_or_pooled(tiny_root, tmp_path):
    again = render_synthetic_benchmark(str(tmp_path / "serial"), TINY, progress=False, workers=1)
    assert tree_digest(os.path.join(again, "market1501")) == tree_digest(os.path.join(tiny_root, "market1501"))


def test_different_seed_differs(tiny_root, tmp_path):
    other = SyntheticParams(**{**TINY.__dict__, "seed": TINY.seed + 1})
    out = render_synthetic_benchmark(str(tmp_path / "other"), other, progress=False, workers=1)
    assert tree_digest(os.path.join(out, "market1501")) != tree_digest(os.path.join(tiny_root, "market1501"))


def test_every_name_parses_and_cameras_are_in_range(tiny_root):
    for entries in parse_tree(tiny_root).values():
        assert all(1 <= cam <= TINY.num_cameras for _, cam in entries)


def test_train_and_test_identities_are_disjoint(tiny_root):
    parsed = parse_tree(tiny_root)
    train = {pid for pid, _ in parsed["bounding_box_train"]}
    test = {pid for pid, _ in parsed["query"] + parsed["bounding_box_test"]} - {0}
    assert train == set(range(1, TINY.num_train_ids + 1))
    assert test == set(range(TINY.num_train_ids + 1, TINY.num_train_ids + TINY.num_test_ids + 1))
    assert not train & test
    assert 0 not in train and 0 not in {pid for pid, _ in parsed["query"]}


def test_every_query_has_a_gallery_match_in_another_camera(tiny_root):
    parsed = parse_tree(tiny_root)
    gallery = defaultdict(set)
    for pid, cam in parsed["bounding_box_test"]:
        gallery[pid].add(cam)
    assert sum(pid == 0 for pid, _ in parsed["bounding_box_test"]) == TINY.num_distractors
    for pid, cam in parsed["query"]:
        assert gallery[pid] - {cam}, (pid, cam)
    # One query image per (identity, camera) at most.
    assert len(parsed["query"]) == len(set(parsed["query"]))


def test_each_identity_is_seen_by_enough_cameras(tiny_root):
    parsed = parse_tree(tiny_root)
    cameras = defaultdict(set)
    for folder in FOLDERS:
        for pid, cam in parsed[folder]:
            if pid:
                cameras[pid].add(cam)
    assert len(cameras) == TINY.num_train_ids + TINY.num_test_ids
    assert all(len(cams) >= TINY.min_cameras_per_id for cams in cameras.values())


def test_metadata_records_params_and_black_clothes_share(tiny_root):
    meta = load_identity_metadata(tiny_root)
    assert meta["seed"] == TINY.seed
    assert meta["params"]["num_train_ids"] == TINY.num_train_ids
    identities = meta["identities"]
    assert len(identities) == TINY.num_train_ids + TINY.num_test_ids
    for split, count in (("train", TINY.num_train_ids), ("test", TINY.num_test_ids)):
        flags = [entry["black_clothes"] for entry in identities.values() if entry["split"] == split]
        assert len(flags) == count
        assert sum(flags) == round(TINY.black_clothes_share * count)
    assert os.path.isfile(os.path.join(tiny_root, "market1501", ".complete"))


def test_second_call_is_a_cache_hit(tiny_root, monkeypatch):
    def fail(*args, **kwargs):
        raise AssertionError("re-rendered despite a complete folder with the same parameters")

    monkeypatch.setattr(writer, "_run_tasks", fail)
    assert render_synthetic_benchmark(tiny_root, TINY, progress=False) == tiny_root


def test_other_params_in_an_existing_folder_are_refused(tiny_root):
    other = SyntheticParams(**{**TINY.__dict__, "num_distractors": 6})
    with pytest.raises(ConfigError, match="different parameters"):
        render_synthetic_benchmark(tiny_root, other, progress=False)


def test_interrupted_render_leaves_no_dataset_folder(tmp_path, monkeypatch):
    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(writer, "_write_metadata", interrupt)
    with pytest.raises(KeyboardInterrupt):
        render_synthetic_benchmark(str(tmp_path), TINY, progress=False, workers=1)
    assert os.listdir(tmp_path) == []


def test_folder_name_is_stable_and_parameter_dependent():
    name = synthetic_folder_name(TINY)
    assert re.fullmatch(r"synthetic_[0-9a-f]{8}", name)
    assert name == synthetic_folder_name(SyntheticParams(**TINY.__dict__))
    assert name != synthetic_folder_name(SyntheticParams(**{**TINY.__dict__, "seed": 4}))


@pytest.mark.parametrize(
    "field, value",
    [
        ("num_train_ids", 0),
        ("num_test_ids", -1),
        ("num_cameras", 7),
        ("min_cameras_per_id", 7),
        ("images_per_camera", (3, 2)),
        ("images_per_camera", (0, 2)),
        ("black_clothes_share", 1.5),
        ("num_distractors", -5),
        ("height", 0),
        ("width", -64),
        ("seed", -1),
    ],
)
def test_invalid_params_raise_config_error_naming_the_field(field, value):
    with pytest.raises(ConfigError, match=re.escape(field.split("[")[0])):
        SyntheticParams(**{field: value})


def test_list_images_per_camera_is_accepted_as_tuple():
    assert SyntheticParams(images_per_camera=[1, 3]).images_per_camera == (1, 3)


def test_render_pedestrian_size_and_determinism():
    traits = sample_traits(np.random.default_rng(0), black_clothes=True)
    camera = build_cameras(0, 6)[2]
    for view in VIEWS:
        first = render_pedestrian(traits, camera, view, np.random.default_rng(1), 40, 20)
        second = render_pedestrian(traits, camera, view, np.random.default_rng(1), 40, 20)
        assert first.size == (20, 40) and first.mode == "RGB"
        assert np.array_equal(np.asarray(first), np.asarray(second))


def test_contact_sheet_writes_a_png(tmp_path):
    path = contact_sheet(str(tmp_path / "sheet.png"), TINY, num_identities=3, num_views=4, black_rows=1, zoom=1)
    from PIL import Image

    with Image.open(path) as sheet:
        assert sheet.size == (4 * TINY.width + 3, 3 * TINY.height)


def test_market1501_loader_reads_the_tree_unchanged(tiny_root):
    splits = build_dataset("Market1501", tiny_root).load()
    parsed = parse_tree(tiny_root)
    assert len(splits.train) == len(parsed["bounding_box_train"])
    assert len(splits.query) == len(parsed["query"])
    assert len(splits.gallery) == len(parsed["bounding_box_test"])
