"""A cheap readability check of the query and gallery images, made before training.

Test images are first decoded by the evaluation at the end of a run: without this check a corrupt query costs the
whole training before it is reported. Each file's header is opened and verified (no full decode), which finds
missing, empty and non-image files in a few seconds even for large galleries.
"""

from __future__ import annotations

import logging
from typing import List, Sequence

from PIL import Image
from yacs.config import CfgNode

from compressreid.data.build import load_test_sets
from compressreid.data.records import DatasetSplits, ImageRecord
from compressreid.errors import DataError

logger = logging.getLogger(__name__)


def image_problem(path: str) -> str:
    """Why ``path`` cannot be read as an image ("" when its header verifies)."""
    try:
        with Image.open(path) as image:
            image.verify()
    except Exception as exc:  # noqa: BLE001 - PIL raises OSError, ValueError, SyntaxError ... for bad files
        text = str(exc).replace(repr(path), "").replace(path, "").strip()  # the caller names the file once
        return text or type(exc).__name__
    return ""


def check_split_images(records: Sequence[ImageRecord], what: str, on_corrupt: str = "fail") -> List[str]:
    """Verify every image of one split; returns the unreadable paths (skip mode).

    Raises:
        DataError: an unreadable image when ``on_corrupt`` is "fail", naming the file and how to proceed.
    """
    bad = []
    for record in records:
        problem = image_problem(record.path)
        if not problem:
            continue
        if on_corrupt == "fail":
            raise DataError(f"{what} image {record.path} is unreadable ({problem}); replace or remove it, or set "
                            "DATASETS.ON_CORRUPT_IMAGE skip")
        bad.append(record.path)
    if bad:
        logger.warning("%s: %d unreadable image(s) will be skipped (DATASETS.ON_CORRUPT_IMAGE skip), first: %s",
                       what, len(bad), bad[0])
    return bad


def check_test_images(cfg: CfgNode, test_sets: Sequence[DatasetSplits] = ()) -> List[DatasetSplits]:
    """Verify the query and gallery images of every DATASETS.TESTS set (loaded here unless given); returns them.

    Raises:
        DataError: an unreadable image (unless DATASETS.ON_CORRUPT_IMAGE is "skip"), or an empty split.
    """
    test_sets = list(test_sets) or load_test_sets(cfg)
    for test_set in test_sets:
        for split, records in (("query", test_set.query), ("gallery", test_set.gallery)):
            check_split_images(records, f"test set {test_set.name}, {split}", cfg.DATASETS.ON_CORRUPT_IMAGE)
    return test_sets
