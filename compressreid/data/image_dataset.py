"""A torch Dataset over ImageRecords: decode, transform, report corrupt images by path."""

from __future__ import annotations

from typing import Callable, Dict, List, Optional, Sequence

import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import default_collate

from compressreid.data.records import ImageRecord
from compressreid.errors import ConfigError, DataError

ON_CORRUPT_CHOICES = ("fail", "skip")
# Item/batch key and ImageRecord.meta key of the black-clothes flag (HAA's ensemble supervision).
BLACK_CLOTHES_KEY = "black_clothes"


def black_clothes_flag(record: ImageRecord) -> int:
    """1 black clothes, 0 not, -1 unknown (the dataset has no such annotation): an int so batches always collate."""
    value = record.meta.get(BLACK_CLOTHES_KEY)
    return -1 if value is None else int(bool(value))


class ImageDataset(torch.utils.data.Dataset):
    """Items are dicts: ``images`` (RGB float 0-255), ``targets`` (int label), ``camids``, ``indices`` and
    ``black_clothes`` (1 / 0, or -1 where the record carries no such flag).

    Args:
        records: the split's images.
        transform: maps a PIL RGB image to a tensor.
        labels: contiguous training label per record (None at test time: targets = -1).
        on_corrupt: "fail" raises DataError naming the file; "skip" returns None, dropped by ``collate``.
    """

    def __init__(self, records: Sequence[ImageRecord], transform: Callable, labels: Optional[Sequence[int]] = None,
                 on_corrupt: str = "fail"):
        if on_corrupt not in ON_CORRUPT_CHOICES:
            raise ConfigError(f"DATASETS.ON_CORRUPT_IMAGE '{on_corrupt}' must be one of {ON_CORRUPT_CHOICES}")
        self.records = list(records)
        self.transform = transform
        self.labels = list(labels) if labels is not None else [-1] * len(self.records)
        self.on_corrupt = on_corrupt

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> Optional[Dict[str, object]]:
        record = self.records[index]
        try:
            with Image.open(record.path) as image:
                image = image.convert("RGB")
        except (OSError, UnidentifiedImageError, ValueError) as exc:
            if self.on_corrupt == "fail":
                raise DataError(f"cannot read image {record.path}: {exc}") from None
            return None
        return {"images": self.transform(image), "targets": self.labels[index], "camids": record.camid,
                "indices": index, BLACK_CLOTHES_KEY: black_clothes_flag(record)}


def collate(items: List[Optional[Dict[str, object]]]) -> Dict[str, object]:
    """default_collate over the readable items; ``skipped`` counts the corrupt ones (skip mode)."""
    kept = [item for item in items if item is not None]
    batch = default_collate(kept) if kept else {"images": torch.empty(0, 3, 1, 1), "indices": torch.empty(0, dtype=torch.long)}
    batch["skipped"] = len(items) - len(kept)
    return batch
