"""VeRi-Wild (small / medium / large test sets), cameras looked up in ``vehicle_info.txt``."""

from __future__ import annotations

import os
from typing import ClassVar, Dict, List

from compressreid.data.datasets.base import DATASETS, ReIDDataset
from compressreid.data.records import DatasetSplits, ImageRecord
from compressreid.errors import DataError

_LIST_LINE = "VID/IMAGE_ID"
_INFO_LINE = "VID/IMAGE_ID;CAMERA;TIME;MODEL;TYPE;COLOR"


class VeRiWild(ReIDDataset):
    """VeRi-Wild (Lou et al. CVPR 2019); subclasses choose the test set.

    camid is the dataset's camera id as written in ``vehicle_info.txt`` (an id, not re-based), as in fast-reid.
    """

    dataset_dir = "VERI-Wild"
    test_size: ClassVar[int] = 0

    def load(self) -> DatasetSplits:
        base = self.require_dataset_dir()
        image_dir = self.require_dir(os.path.join(base, "images"), "images")
        split_dir = self.require_dir(os.path.join(base, "train_test_split"), "train_test_split")
        cameras = self._read_cameras(os.path.join(split_dir, "vehicle_info.txt"))
        lists = {
            "train": "train_list.txt",
            "query": f"test_{self.test_size}_query.txt",
            "gallery": f"test_{self.test_size}.txt",
        }
        splits = {split: self._read(os.path.join(split_dir, name), image_dir, cameras) for split, name in lists.items()}
        return self.finish(splits["train"], splits["query"], splits["gallery"])

    def _read_cameras(self, path: str) -> Dict[str, int]:
        """Map image id -> camera id; the file starts with a header line, skipped when its camera is not a number."""
        cameras = {}
        for number, line in self.read_list(path, "vehicle_info.txt"):
            fields = line.split(";")
            key = fields[0].split("/")
            if len(fields) < 2 or len(key) != 2 or not fields[1].strip().isdigit():
                if number == 1:
                    continue
                raise self.list_error(path, number, line, _INFO_LINE)
            cameras[key[1]] = int(fields[1])
        return cameras

    def _read(self, list_path: str, image_dir: str, cameras: Dict[str, int]) -> List[ImageRecord]:
        records = []
        for number, line in self.read_list(list_path, f"list '{os.path.basename(list_path)}'"):
            parts = line.split("/")
            if len(parts) != 2 or not parts[0].isdigit():
                raise self.list_error(list_path, number, line, _LIST_LINE)
            vid, image_id = parts[0], os.path.splitext(parts[1])[0]
            if image_id not in cameras:
                raise DataError(f"{self.name}: image '{line}' of '{list_path}' is missing from vehicle_info.txt")
            path = os.path.join(image_dir, vid, f"{image_id}.jpg")
            records.append(ImageRecord(path=path, pid=int(vid), camid=cameras[image_id]))
        return records


def _layout(size: int) -> str:
    return (
        "ROOT/VERI-Wild/{images/VID/IMAGE_ID.jpg, train_test_split/{train_list.txt,"
        f"test_{size}_query.txt,test_{size}.txt,vehicle_info.txt}}}}"
    )


@DATASETS.register()
class SmallVeRiWild(VeRiWild):
    """VeRi-Wild, 3,000-vehicle test set."""

    test_size = 3000
    expected_layout = _layout(3000)


@DATASETS.register()
class MediumVeRiWild(VeRiWild):
    """VeRi-Wild, 5,000-vehicle test set."""

    test_size = 5000
    expected_layout = _layout(5000)


@DATASETS.register()
class LargeVeRiWild(VeRiWild):
    """VeRi-Wild, 10,000-vehicle test set."""

    test_size = 10000
    expected_layout = _layout(10000)
