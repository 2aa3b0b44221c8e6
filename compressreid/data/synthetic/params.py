"""Parameters of the synthetic ReID benchmark: validation, a canonical dict and a folder name hashed from it."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from typing import Dict, Tuple

from compressreid.errors import ConfigError

# Bump whenever the renderer's output changes, so folders named by `synthetic_folder_name` never serve stale images.
GENERATOR_VERSION = 1

# Market-1501 loaders (fast-reid, torchreid, ours) assert 1 <= pid <= 1501 and 1 <= camid <= 6.
MAX_IDENTITIES = 1501
MAX_CAMERAS = 6


@dataclass(frozen=True)
class SyntheticParams:
    """Everything that determines the rendered benchmark; two equal instances render byte-identical trees.

    Attributes:
        num_train_ids: identities in ``bounding_box_train`` (pids 1..num_train_ids).
        num_test_ids: identities split over ``query`` and ``bounding_box_test``, disjoint from the train ones.
        num_cameras: cameras in the scene (1-based ids in file names).
        min_cameras_per_id: every identity is seen by at least this many cameras.
        images_per_camera: inclusive (low, high) range of images drawn per (identity, camera).
        black_clothes_share: share of identities per split wearing near-black upper and lower clothes.
        num_distractors: gallery images of unrelated people, labelled pid 0 as in Market-1501.
        height: image height in pixels.
        width: image width in pixels.
        seed: root of every random draw.
    """

    num_train_ids: int = 150
    num_test_ids: int = 100
    num_cameras: int = 6
    min_cameras_per_id: int = 4
    images_per_camera: Tuple[int, int] = (2, 4)
    black_clothes_share: float = 0.2
    num_distractors: int = 200
    height: int = 128
    width: int = 64
    seed: int = 0

    def __post_init__(self) -> None:
        # Configs arrive as YAML lists; a tuple keeps the instance hashable and its dict canonical.
        try:
            object.__setattr__(self, "images_per_camera", tuple(self.images_per_camera))
        except TypeError:
            raise ConfigError(
                f"SyntheticParams.images_per_camera = {self.images_per_camera!r}: expected (low, high)"
            ) from None
        validate_params(self)


def _require_int(name: str, value: object, low: int, high: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ConfigError(f"SyntheticParams.{name} = {value!r}: expected an integer in [{low}, {high}]")


def validate_params(params: SyntheticParams) -> None:
    """Check every field; raise ConfigError with a one-line message naming the field and its valid range."""
    _require_int("num_train_ids", params.num_train_ids, 1, MAX_IDENTITIES - 1)
    _require_int("num_test_ids", params.num_test_ids, 1, MAX_IDENTITIES - params.num_train_ids)
    _require_int("num_cameras", params.num_cameras, 2, MAX_CAMERAS)
    # Two cameras at least, so every query image can have a gallery match in another camera.
    _require_int("min_cameras_per_id", params.min_cameras_per_id, 2, params.num_cameras)
    ipc = params.images_per_camera
    if len(ipc) != 2:
        raise ConfigError(
            f"SyntheticParams.images_per_camera = {ipc!r}: expected (low, high) with 1 <= low <= high <= 50"
        )
    _require_int("images_per_camera[0]", ipc[0], 1, 50)
    _require_int("images_per_camera[1]", ipc[1], ipc[0], 50)
    share = params.black_clothes_share
    if isinstance(share, bool) or not isinstance(share, (int, float)) or not 0.0 <= share <= 1.0:
        raise ConfigError(f"SyntheticParams.black_clothes_share = {share!r}: expected a number in [0, 1]")
    _require_int("num_distractors", params.num_distractors, 0, 999_999)
    _require_int("height", params.height, 16, 1024)
    _require_int("width", params.width, 8, 512)
    _require_int("seed", params.seed, 0, 2**63 - 1)


def params_to_dict(params: SyntheticParams) -> Dict[str, object]:
    """The canonical JSON-able form recorded in ``identities.json`` and hashed into the folder name."""
    values = asdict(params)
    values["images_per_camera"] = list(params.images_per_camera)
    values["black_clothes_share"] = float(params.black_clothes_share)
    values["generator_version"] = GENERATOR_VERSION
    return values


def synthetic_folder_name(params: SyntheticParams) -> str:
    """Return ``synthetic_<8 hex>``, a cache folder name that changes with any parameter or the generator version."""
    canonical = json.dumps(params_to_dict(params), sort_keys=True, separators=(",", ":"))
    return "synthetic_" + hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:8]
