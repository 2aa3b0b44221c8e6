"""Query and gallery images are checked readable before training, naming the first bad file (or skipping it)."""

from __future__ import annotations

import pytest
from PIL import Image

from compressreid.data.records import ImageRecord
from compressreid.data.verify import check_split_images, image_problem
from compressreid.errors import DataError


@pytest.fixture
def records(tmp_path):
    good = tmp_path / "0001_c1s1_000001_00.jpg"
    Image.new("RGB", (16, 32), (10, 20, 30)).save(good)
    garbage = tmp_path / "0002_c1s1_000001_00.jpg"
    garbage.write_bytes(b"not an image")
    empty = tmp_path / "0003_c1s1_000001_00.jpg"
    empty.write_bytes(b"")
    return [ImageRecord(str(p), pid, 0) for pid, p in enumerate((good, garbage, empty, tmp_path / "missing.jpg"))]


def test_image_problem_names_what_is_wrong_without_repeating_the_path(records):
    assert image_problem(records[0].path) == ""
    for record in records[1:]:
        problem = image_problem(record.path)
        assert problem and record.path not in problem


def test_an_unreadable_query_image_fails_naming_the_file_and_the_way_out(records):
    with pytest.raises(DataError) as info:
        check_split_images(records, "test set Synthetic, query")
    message = str(info.value)
    assert message.startswith(f"test set Synthetic, query image {records[1].path} is unreadable")
    assert "DATASETS.ON_CORRUPT_IMAGE skip" in message


def test_skip_mode_reports_every_unreadable_image_instead(records):
    assert check_split_images(records, "gallery", on_corrupt="skip") == [r.path for r in records[1:]]
