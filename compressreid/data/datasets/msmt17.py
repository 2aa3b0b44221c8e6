"""MSMT17 (V1 or V2 folder layout) read from its list files, as fast-reid does."""

from __future__ import annotations

import os
from typing import ClassVar, Dict, List, Tuple

from compressreid.data.datasets.base import DATASETS, ReIDDataset
from compressreid.data.records import DatasetSplits, ImageRecord
from compressreid.errors import DataError

# Release folder -> (train image folder, test image folder); V2 only renames them and blurs faces.
_VERSIONS: Dict[str, Tuple[str, str]] = {
    "MSMT17_V1": ("train", "test"),
    "MSMT17_V2": ("mask_train_v2", "mask_test_v2"),
}
_LINE = "rel/path.jpg PID"
_NAME = "'PID_INDEX_CAM_...jpg', e.g. '0000_000_01_0303morning_0015_0.jpg'"


@DATASETS.register()
class MSMT17(ReIDDataset):
    """MSMT17 (Wei et al. CVPR 2018): 4,101 identities, 15 cameras; V1 or V2 is picked by which folder exists.

    Train is ``list_train.txt``; ``list_val.txt`` joins it only with ``include_val`` (DATASETS.COMBINEALL),
    exactly as fast-reid does, so published fast-reid MSMT17 numbers are comparable.
    """

    dataset_dir = "MSMT17"
    versions: ClassVar[Tuple[str, ...]] = ("MSMT17_V1", "MSMT17_V2")  # tried in this order
    expected_layout = (
        "ROOT/MSMT17/MSMT17_V1/{train/,test/,list_train.txt,list_val.txt,list_query.txt,list_gallery.txt} "
        "or ROOT/MSMT17/MSMT17_V2/{mask_train_v2/,mask_test_v2/,list_*.txt}"
    )

    def __init__(self, root: str, seed: int = 0, include_val: bool = False):
        super().__init__(root, seed)
        self.include_val = include_val

    @classmethod
    def from_config(cls, cfg) -> "MSMT17":
        return cls(cfg.DATASETS.ROOT, seed=cfg.SEED, include_val=cfg.DATASETS.COMBINEALL)

    def load(self) -> DatasetSplits:
        release = self._find_release()
        train_folder, test_folder = _VERSIONS[os.path.basename(release)]
        train_dir = self.require_dir(os.path.join(release, train_folder), f"split 'train' ({train_folder})")
        test_dir = self.require_dir(os.path.join(release, test_folder), f"split 'test' ({test_folder})")
        train = self._read(release, "list_train.txt", train_dir)
        if self.include_val:
            train += self._read(release, "list_val.txt", train_dir)
        query = self._read(release, "list_query.txt", test_dir)
        gallery = self._read(release, "list_gallery.txt", test_dir)
        return self.finish(train, query, gallery)

    def _find_release(self) -> str:
        candidates = [os.path.join(self.dataset_path, version) for version in self.versions]
        for candidate in candidates:
            if os.path.isdir(candidate):
                return candidate
        looked = " or ".join(f"'{candidate}'" for candidate in candidates)
        raise DataError(f"{self.name}: dataset folder not found at {looked}; expected layout: {self.expected_layout}")

    def _read(self, release: str, list_name: str, image_dir: str) -> List[ImageRecord]:
        list_path = os.path.join(release, list_name)
        records = []
        for number, line in self.read_list(list_path, f"list '{list_name}'"):
            parts = line.split()
            if len(parts) != 2 or not parts[1].lstrip("-").isdigit():
                raise self.list_error(list_path, number, line, _LINE)
            path = os.path.join(image_dir, parts[0])
            records.append(ImageRecord(path=path, pid=int(parts[1]), camid=self._camid(path)))
        return records

    def _camid(self, path: str) -> int:
        fields = os.path.basename(path).split("_")
        if len(fields) < 3 or not fields[2].isdigit() or int(fields[2]) < 1:
            raise self.name_error(path, _NAME)
        return int(fields[2]) - 1


@DATASETS.register()
class MSMT17V1(MSMT17):
    """MSMT17, V1 release folder only."""

    versions = ("MSMT17_V1",)
    expected_layout = (
        "ROOT/MSMT17/MSMT17_V1/{train/,test/,list_train.txt,list_val.txt,list_query.txt,list_gallery.txt}"
    )


@DATASETS.register()
class MSMT17V2(MSMT17):
    """MSMT17, V2 release folder only (faces blurred)."""

    versions = ("MSMT17_V2",)
    expected_layout = (
        "ROOT/MSMT17/MSMT17_V2/{mask_train_v2/,mask_test_v2/,list_train.txt,list_val.txt,list_query.txt,"
        "list_gallery.txt}"
    )
