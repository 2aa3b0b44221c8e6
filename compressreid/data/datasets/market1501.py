"""Market-1501 and the shared loader for its three-folder layout (bounding_box_train / query / bounding_box_test)."""

from __future__ import annotations

import os
import re
from typing import ClassVar, List

from compressreid.data.datasets.base import DATASETS, ReIDDataset, glob_images, parse_pid_camid
from compressreid.data.records import DatasetSplits, ImageRecord

# (folder, split) pairs of the Market-1501 layout, shared by DukeMTMC-reID.
_SPLIT_FOLDERS = (("bounding_box_train", "train"), ("query", "query"), ("bounding_box_test", "gallery"))


class BoundingBoxDataset(ReIDDataset):
    """A dataset laid out as Market-1501: one flat folder of ``PID_cCAM...jpg`` images per split.

    pid -1 marks junk detections and is dropped everywhere; pid 0 marks distractors, which only make sense as
    gallery clutter, so they are kept in the gallery and dropped from train and query.
    """

    name_pattern: ClassVar[re.Pattern] = re.compile(r"^(-?\d+)_c(\d+)")
    name_example: ClassVar[str] = ""

    def data_dir(self) -> str:
        """The folder that holds the split folders (a subclass may look one level deeper)."""
        return self.require_dataset_dir()

    def load(self) -> DatasetSplits:
        data_dir = self.data_dir()
        splits = {}
        for folder, split in _SPLIT_FOLDERS:
            path = self.require_dir(os.path.join(data_dir, folder), f"split '{split}' ({folder})")
            splits[split] = self._read_folder(path, keep_distractors=split == "gallery")
        return self.finish(splits["train"], splits["query"], splits["gallery"])

    def _read_folder(self, path: str, keep_distractors: bool) -> List[ImageRecord]:
        records = []
        for image in glob_images(path):
            try:
                pid, camid = parse_pid_camid(self.name_pattern, image)
            except ValueError:
                raise self.name_error(image, f"'PID_cCAM...jpg', e.g. '{self.name_example}'") from None
            if pid == -1 or (pid == 0 and not keep_distractors):
                continue
            records.append(ImageRecord(path=image, pid=pid, camid=camid))
        return records


@DATASETS.register()
class Market1501(BoundingBoxDataset):
    """Market-1501 (Zheng et al. ICCV 2015): 1,501 identities, 6 cameras."""

    dataset_dir = "market1501"
    release_dir = "Market-1501-v15.09.15"
    name_example = "0002_c1s1_000451_03.jpg"
    expected_layout = (
        "ROOT/market1501/[Market-1501-v15.09.15/]{bounding_box_train,query,bounding_box_test}/"
        "0002_c1s1_000451_03.jpg"
    )

    def data_dir(self) -> str:
        # The archive unpacks into a versioned subfolder; fast-reid accepts both placements.
        base = self.require_dataset_dir()
        release = os.path.join(base, self.release_dir)
        return release if os.path.isdir(release) else base
