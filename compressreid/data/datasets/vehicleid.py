"""VehicleID (small / medium / large test lists); the gallery is one image per vehicle, drawn with a seed."""

from __future__ import annotations

import os
from collections import defaultdict
from typing import ClassVar, Dict, List, Tuple

import numpy as np

from compressreid.data.datasets.base import DATASETS, ReIDDataset
from compressreid.data.records import DatasetSplits, ImageRecord

_LINE = "IMAGE_ID VID"
# VehicleID has no cameras. Query and gallery get different camids so that the usual "same pid and same camera"
# filter of the evaluator removes nothing.
_QUERY_CAMID, _GALLERY_CAMID = 0, 1


class VehicleID(ReIDDataset):
    """VehicleID (Liu et al. CVPR 2016); subclasses choose the test list.

    Unlike fast-reid, whose draw is unseeded, the gallery image of each vehicle is drawn by a numpy Generator
    seeded with ``seed``, so a run's query/gallery split can be reproduced.
    """

    dataset_dir = "vehicleid"
    test_size: ClassVar[int] = 0

    def load(self) -> DatasetSplits:
        base = self.require_dataset_dir()
        image_dir = self.require_dir(os.path.join(base, "image"), "image")
        split_dir = self.require_dir(os.path.join(base, "train_test_split"), "train_test_split")
        train = [
            ImageRecord(path=path, pid=pid, camid=0)
            for path, pid in self._read(os.path.join(split_dir, "train_list.txt"), image_dir)
        ]
        test = self._read(os.path.join(split_dir, f"test_list_{self.test_size}.txt"), image_dir)
        query, gallery = self._draw_gallery(test)
        return self.finish(train, query, gallery)

    def _read(self, list_path: str, image_dir: str) -> List[Tuple[str, int]]:
        entries = []
        for number, line in self.read_list(list_path, f"list '{os.path.basename(list_path)}'"):
            parts = line.split()
            if len(parts) != 2 or not parts[1].isdigit():
                raise self.list_error(list_path, number, line, _LINE)
            entries.append((os.path.join(image_dir, f"{parts[0]}.jpg"), int(parts[1])))
        return entries

    def _draw_gallery(self, test: List[Tuple[str, int]]) -> Tuple[List[ImageRecord], List[ImageRecord]]:
        by_pid: Dict[int, List[str]] = defaultdict(list)
        for path, pid in test:
            by_pid[pid].append(path)
        rng = np.random.default_rng(self.seed)
        query, gallery = [], []
        # Iterate in a fixed order so the same seed gives the same draw whatever the list file's line order.
        for pid in sorted(by_pid):
            paths = sorted(by_pid[pid])
            chosen = int(rng.integers(len(paths)))
            for index, path in enumerate(paths):
                if index == chosen:
                    gallery.append(ImageRecord(path=path, pid=pid, camid=_GALLERY_CAMID))
                else:
                    query.append(ImageRecord(path=path, pid=pid, camid=_QUERY_CAMID))
        return query, gallery


def _layout(size: int) -> str:
    return f"ROOT/vehicleid/{{image/IMAGE_ID.jpg, train_test_split/{{train_list.txt,test_list_{size}.txt}}}}"


@DATASETS.register()
class SmallVehicleID(VehicleID):
    """VehicleID, 800-vehicle test list."""

    test_size = 800
    expected_layout = _layout(800)


@DATASETS.register()
class MediumVehicleID(VehicleID):
    """VehicleID, 1,600-vehicle test list."""

    test_size = 1600
    expected_layout = _layout(1600)


@DATASETS.register()
class LargeVehicleID(VehicleID):
    """VehicleID, 2,400-vehicle test list."""

    test_size = 2400
    expected_layout = _layout(2400)
