"""The dataset registry, the ``ReIDDataset`` contract and the checks every folder-layout loader shares."""

from __future__ import annotations

import abc
import os
import re
from typing import ClassVar, Iterable, List, Tuple

from compressreid.data.records import DatasetSplits, ImageRecord
from compressreid.errors import DataError
from compressreid.registry import Registry

DATASETS = Registry("dataset")


class ReIDDataset(abc.ABC):
    """A ReID dataset read from its published folder layout under a datasets root.

    Subclasses set ``dataset_dir`` (the folder inside ``root``) and ``expected_layout`` (one line quoted in error
    messages) and implement ``load``. The registered name is the class name, as in fast-reid.

    Args:
        root: the folder that contains each dataset's own folder (the config's ``DATASETS.ROOT``).
        seed: seed for datasets whose split involves a random draw (VehicleID); ignored by the others.
    """

    dataset_dir: ClassVar[str] = ""
    expected_layout: ClassVar[str] = ""

    def __init__(self, root: str, seed: int = 0):
        self.root = os.path.abspath(os.path.expanduser(str(root)))
        self.seed = int(seed)

    @classmethod
    def from_config(cls, cfg) -> "ReIDDataset":
        """Build from DATASETS.ROOT and SEED; datasets with options of their own override this."""
        return cls(cfg.DATASETS.ROOT, seed=cfg.SEED)

    @property
    def name(self) -> str:
        return type(self).__name__

    @property
    def dataset_path(self) -> str:
        return os.path.join(self.root, self.dataset_dir)

    @abc.abstractmethod
    def load(self) -> DatasetSplits:
        """Read the three splits.

        Raises:
            DataError: a folder or list file is missing, a name does not parse, or a split is empty.
        """

    # -- helpers shared by the loaders -------------------------------------------------------------------------

    def require_dataset_dir(self, path: str = "") -> str:
        """Return ``path`` (default: ``dataset_path``) or raise a DataError quoting the expected layout."""
        path = path or self.dataset_path
        if not os.path.isdir(path):
            raise DataError(
                f"{self.name}: dataset folder not found at '{path}'; expected layout: {self.expected_layout}"
            )
        return path

    def require_dir(self, path: str, what: str) -> str:
        if not os.path.isdir(path):
            raise DataError(f"{self.name}: {what} folder not found: '{path}'")
        return path

    def require_file(self, path: str, what: str) -> str:
        if not os.path.isfile(path):
            raise DataError(f"{self.name}: {what} file not found: '{path}'")
        return path

    def read_list(self, path: str, what: str) -> List[Tuple[int, str]]:
        """Return ``(line_number, stripped_line)`` for each non-blank line of a split list file."""
        self.require_file(path, what)
        with open(path, "r", encoding="utf-8") as handle:
            return [(number, line.strip()) for number, line in enumerate(handle, start=1) if line.strip()]

    def list_error(self, path: str, number: int, line: str, expected: str) -> DataError:
        return DataError(f"{self.name}: cannot parse line {number} of '{path}': '{line}'; expected '{expected}'")

    def name_error(self, path: str, expected: str) -> DataError:
        return DataError(f"{self.name}: cannot parse image name '{path}'; expected pattern {expected}")

    def finish(
        self, train: Iterable[ImageRecord], query: Iterable[ImageRecord], gallery: Iterable[ImageRecord]
    ) -> DatasetSplits:
        """Sort each split by path (so loads are deterministic) and refuse empty splits."""
        splits = DatasetSplits(
            name=self.name,
            train=sort_records(train),
            query=sort_records(query),
            gallery=sort_records(gallery),
        )
        check_splits(splits)
        return splits


def sort_records(records: Iterable[ImageRecord]) -> List[ImageRecord]:
    return sorted(records, key=lambda record: record.path)


def check_splits(splits: DatasetSplits) -> None:
    """Raise a DataError naming the dataset and split when train has no identity or query/gallery is empty."""
    if not {record.pid for record in splits.train}:
        raise DataError(f"{splits.name}: split 'train' has no identities")
    for split_name in ("query", "gallery"):
        if not getattr(splits, split_name):
            raise DataError(f"{splits.name}: split '{split_name}' is empty")


def glob_images(directory: str, extension: str = ".jpg") -> List[str]:
    """Absolute paths of the files in ``directory`` ending with ``extension``, sorted (Thumbs.db etc. skipped)."""
    return sorted(
        os.path.join(directory, entry) for entry in os.listdir(directory) if entry.lower().endswith(extension)
    )


def parse_pid_camid(pattern: re.Pattern, path: str) -> Tuple[int, int]:
    """Match ``pattern`` (two groups: pid, 1-based camera) on the basename; return ``(pid, camid 0-based)``.

    Raises:
        ValueError: the name does not match or its camera is below 1; callers turn it into a DataError.
    """
    match = pattern.match(os.path.basename(path))
    if match is None:
        raise ValueError(path)
    pid, camera = int(match.group(1)), int(match.group(2))
    if camera < 1:
        raise ValueError(path)
    return pid, camera - 1


def merge_train_sets(splits: List[DatasetSplits]) -> List[ImageRecord]:
    """Concatenate several training sets, namespacing identities so equal pids of two datasets stay distinct.

    Args:
        splits: loaded datasets; each contributes its ``train`` records.

    Returns:
        Records whose ``pid`` is the string ``f"{name}_{pid}"``; paths, camids and meta are kept.

    Raises:
        DataError: two entries share a name (the same training set would be counted twice).
    """
    names = [split.name for split in splits]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise DataError(f"merge_train_sets: dataset(s) listed twice: {', '.join(duplicates)}")
    return [
        ImageRecord(path=record.path, pid=f"{split.name}_{record.pid}", camid=record.camid, meta=dict(record.meta))
        for split in splits
        for record in split.train
    ]
