"""DukeMTMC-reID, read from the Market-1501-style folder layout."""

from __future__ import annotations

from compressreid.data.datasets.base import DATASETS
from compressreid.data.datasets.market1501 import BoundingBoxDataset


@DATASETS.register()
class DukeMTMC(BoundingBoxDataset):
    """DukeMTMC-reID (Ristani et al. 2016; Zheng et al. ICCV 2017): 1,404 identities + distractors, 8 cameras."""

    dataset_dir = "DukeMTMC-reID"
    name_example = "0001_c2_f0046182.jpg"
    expected_layout = "ROOT/DukeMTMC-reID/{bounding_box_train,query,bounding_box_test}/0001_c2_f0046182.jpg"
