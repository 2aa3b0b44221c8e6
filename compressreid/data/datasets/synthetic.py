"""The built-in synthetic benchmark as a dataset: rendered once (cached by its parameters), read as Market1501."""

from __future__ import annotations

import os
from dataclasses import replace

from yacs.config import CfgNode

from compressreid.data.datasets.base import DATASETS, ReIDDataset
from compressreid.data.datasets.market1501 import Market1501
from compressreid.data.records import DatasetSplits
from compressreid.data.synthetic import SyntheticParams, load_identity_metadata, render_synthetic_benchmark
from compressreid.data.synthetic import synthetic_folder_name


@DATASETS.register()
class Synthetic(ReIDDataset):
    """Procedurally rendered pedestrians (see compressreid.data.synthetic); no download.

    Records carry ``meta["black_clothes"]`` from the benchmark's identities.json.
    """

    expected_layout = "rendered on first use into ROOT/synthetic_<params hash>/market1501/ (Market1501 layout)"

    def __init__(self, root: str, seed: int = 0, params: SyntheticParams = SyntheticParams(), progress: bool = True):
        super().__init__(root, seed)
        self.params = params
        self.progress = progress

    @classmethod
    def from_config(cls, cfg: CfgNode) -> "Synthetic":
        s = cfg.DATASETS.SYNTHETIC
        params = SyntheticParams(
            num_train_ids=s.NUM_TRAIN_IDS, num_test_ids=s.NUM_TEST_IDS, num_cameras=s.NUM_CAMERAS,
            min_cameras_per_id=s.MIN_CAMERAS_PER_ID, images_per_camera=tuple(s.IMAGES_PER_CAMERA),
            black_clothes_share=s.BLACK_CLOTHES_SHARE, num_distractors=s.NUM_DISTRACTORS,
            height=s.SIZE[0], width=s.SIZE[1], seed=s.SEED,
        )
        return cls(cfg.DATASETS.ROOT, seed=cfg.SEED, params=params)

    @property
    def dataset_path(self) -> str:
        return os.path.join(self.root, synthetic_folder_name(self.params))

    def load(self) -> DatasetSplits:
        out_root = render_synthetic_benchmark(self.dataset_path, self.params, progress=self.progress)
        splits = Market1501(out_root).load()
        identities = load_identity_metadata(out_root)["identities"]

        def with_meta(records):
            return [replace(r, meta={"black_clothes": bool(identities.get(f"{r.pid:04d}", {}).get("black_clothes"))})
                    for r in records]

        return DatasetSplits(self.name, with_meta(splits.train), with_meta(splits.query), with_meta(splits.gallery))

