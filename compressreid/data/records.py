"""The unit every dataset yields: one image with its identity, camera and optional metadata."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Union

Identity = Union[int, str]


@dataclass(frozen=True)
class ImageRecord:
    """One image of a ReID split.

    Attributes:
        path: absolute path of the image file.
        pid: identity label as the dataset defines it (merged training sets namespace it as ``"name_pid"``).
        camid: camera index (0-based where the dataset's own naming is 1-based).
        meta: per-image extras, e.g. ``{"black_clothes": True}`` on the synthetic benchmark.
    """

    path: str
    pid: Identity
    camid: int
    meta: Dict[str, object] = field(default_factory=dict, compare=False, hash=False)


@dataclass
class DatasetSplits:
    """The three named splits of one ReID dataset; query and gallery are never split by a count."""

    name: str
    train: List[ImageRecord]
    query: List[ImageRecord]
    gallery: List[ImageRecord]

    def summary(self) -> str:
        def ids(records):
            return len({r.pid for r in records})

        return (
            f"{self.name}: train {len(self.train)} images / {ids(self.train)} ids, "
            f"query {len(self.query)} / {ids(self.query)}, gallery {len(self.gallery)} / {ids(self.gallery)}"
        )
