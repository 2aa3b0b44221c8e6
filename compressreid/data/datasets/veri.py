"""VeRi-776, read from its three image folders."""

from __future__ import annotations

import os
import re
from typing import List

from compressreid.data.datasets.base import DATASETS, ReIDDataset, glob_images, parse_pid_camid
from compressreid.data.records import DatasetSplits, ImageRecord

_PATTERN = re.compile(r"^(\d+)_c(\d{3})_")
_NAME = "'VID_cCCC_...jpg', e.g. '0001_c001_00016450_0.jpg'"


@DATASETS.register()
class VeRi(ReIDDataset):
    """VeRi-776 (Liu et al. ICME 2016): 776 vehicles, 20 cameras."""

    dataset_dir = "veri"
    expected_layout = "ROOT/veri/{image_train,image_query,image_test}/0001_c001_00016450_0.jpg"

    def load(self) -> DatasetSplits:
        base = self.require_dataset_dir()
        splits = {}
        for folder, split in (("image_train", "train"), ("image_query", "query"), ("image_test", "gallery")):
            folder_path = self.require_dir(os.path.join(base, folder), f"split '{split}' ({folder})")
            splits[split] = self._read_folder(folder_path)
        return self.finish(splits["train"], splits["query"], splits["gallery"])

    def _read_folder(self, path: str) -> List[ImageRecord]:
        records = []
        for image in glob_images(path):
            try:
                pid, camid = parse_pid_camid(_PATTERN, image)
            except ValueError:
                raise self.name_error(image, _NAME) from None
            records.append(ImageRecord(path=image, pid=pid, camid=camid))
        return records
