"""CUHK03 under the new (767/700) protocol, detected or labeled boxes, extracted from the MATLAB release once."""

from __future__ import annotations

import os
import shutil
from typing import ClassVar, Dict, List

import numpy as np

from compressreid.data.datasets.base import DATASETS, ReIDDataset
from compressreid.data.records import DatasetSplits, ImageRecord
from compressreid.errors import DataError

_PROTOCOL_KEYS = ("train_idx", "query_idx", "gallery_idx", "filelist", "labels")
_NAME = "'CAMPAIR_PID_VIEW_INDEX.png', e.g. '1_001_1_01.png'"


@DATASETS.register()
class CUHK03(ReIDDataset):
    """CUHK03 (Li et al. CVPR 2014), new protocol of Zhong et al. CVPR 2017, detected boxes.

    Images are written once to ``images_{detected,labeled}/`` with torchreid's names, so a folder extracted by
    torchreid or fast-reid is reused as is. camid is the view inside the camera pair (0 or 1), as in torchreid.
    """

    dataset_dir = "cuhk03"
    image_type: ClassVar[str] = "detected"
    expected_layout = (
        "ROOT/cuhk03/{cuhk03_release/cuhk-03.mat (or an extracted images_detected/), "
        "cuhk03_new_protocol_config_detected.mat}"
    )

    def load(self) -> DatasetSplits:
        base = self.require_dataset_dir()
        protocol_name = f"cuhk03_new_protocol_config_{self.image_type}.mat"
        protocol = self._read_protocol(self.require_file(os.path.join(base, protocol_name), "new-protocol split"))
        image_dir = os.path.join(base, f"images_{self.image_type}")
        if not os.path.isdir(image_dir):
            raw = self.require_file(os.path.join(base, "cuhk03_release", "cuhk-03.mat"), "raw data (cuhk-03.mat)")
            self._extract(raw, image_dir)
        files = [str(np.ravel(entry)[0]) for entry in protocol["filelist"].ravel()]
        labels = protocol["labels"].ravel().astype(int)
        train, query, gallery = (
            self._records(protocol[f"{key}_idx"], files, labels, image_dir) for key in ("train", "query", "gallery")
        )
        return self.finish(train, query, gallery)

    def _read_protocol(self, path: str) -> Dict[str, np.ndarray]:
        from scipy.io import loadmat  # scipy is only needed by this dataset

        try:
            content = loadmat(path)
        # scipy raises NotImplementedError for MATLAB v7.3 files, ValueError/OSError for other non-mat content.
        except (ValueError, OSError, TypeError, NotImplementedError) as error:
            raise DataError(f"{self.name}: cannot read split file '{path}': {error}") from None
        missing = [key for key in _PROTOCOL_KEYS if key not in content]
        if missing:
            raise DataError(f"{self.name}: split file '{path}' lacks {', '.join(missing)}")
        return {key: content[key] for key in _PROTOCOL_KEYS}

    def _records(
        self, indices: np.ndarray, files: List[str], labels: np.ndarray, image_dir: str
    ) -> List[ImageRecord]:
        records = []
        for index in indices.ravel().astype(int) - 1:  # MATLAB indices are 1-based
            if not 0 <= index < len(files):
                raise DataError(f"{self.name}: split index {index + 1} outside the {len(files)}-image file list")
            name = files[index]
            fields = name.split("_")
            if len(fields) < 4 or not fields[2].isdigit() or int(fields[2]) < 1:
                raise self.name_error(name, _NAME)
            path = os.path.join(image_dir, name)
            records.append(ImageRecord(path=path, pid=int(labels[index]), camid=int(fields[2]) - 1))
        return records

    def _extract(self, mat_path: str, image_dir: str) -> None:
        # Write into a private folder and rename at the end, so an interrupted run never leaves a half-filled
        # images folder that the next load would trust (and parallel ranks do not collide).
        partial = f"{image_dir}.partial-{os.getpid()}"
        shutil.rmtree(partial, ignore_errors=True)
        try:
            os.makedirs(partial)
            _write_images(mat_path, self.image_type, partial)
        except (OSError, KeyError, ValueError) as error:
            shutil.rmtree(partial, ignore_errors=True)
            raise DataError(
                f"{self.name}: cannot extract '{self.image_type}' images from '{mat_path}': {error}"
            ) from None
        try:
            os.rename(partial, image_dir)
        except OSError:
            if not os.path.isdir(image_dir):
                raise
            shutil.rmtree(partial, ignore_errors=True)  # another process finished first


@DATASETS.register()
class CUHK03Labeled(CUHK03):
    """CUHK03, new protocol, hand-labeled boxes."""

    image_type = "labeled"
    expected_layout = (
        "ROOT/cuhk03/{cuhk03_release/cuhk-03.mat (or an extracted images_labeled/), "
        "cuhk03_new_protocol_config_labeled.mat}"
    )


def _write_images(mat_path: str, image_type: str, out_dir: str) -> None:
    """Save every image of one box type as PNG, named ``{campair}_{pid:03d}_{view}_{index:02d}.png`` (1-based).

    The file is MATLAB v7.3 (HDF5): ``mat[image_type]`` holds one reference per camera pair, each pointing to a
    pids x 10 cell of image references (stored transposed); indices 0-4 are view 1 and 5-9 view 2.
    """
    import h5py  # only needed for this one-off extraction
    from PIL import Image

    with h5py.File(mat_path, "r") as mat:
        for campair, pair_ref in enumerate(mat[image_type][()].ravel(), start=1):
            cells = mat[pair_ref][()].T
            for pid, row in enumerate(cells, start=1):
                for index, image_ref in enumerate(row, start=1):
                    image = mat[image_ref][()].T
                    if image.ndim < 3 or image.size == 0:
                        continue  # MATLAB's empty cell: this person has fewer than 10 images
                    view = 1 if index <= 5 else 2
                    name = f"{campair}_{pid:03d}_{view}_{index:02d}.png"
                    Image.fromarray(np.ascontiguousarray(image)).save(os.path.join(out_dir, name))
