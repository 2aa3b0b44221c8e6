"""The benchmark plan: which identity is seen by which cameras, how often, in which split and under which name.

Every draw comes from a generator keyed by (seed, stream, identity[, image]) so the plan and each image are
independent of iteration and rendering order.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, Tuple

import numpy as np

from compressreid.data.synthetic.cameras import Camera, build_cameras, sample_view, tracklet_views
from compressreid.data.synthetic.params import SyntheticParams
from compressreid.data.synthetic.traits import Traits, sample_traits

SPLIT_FOLDERS = ("bounding_box_train", "query", "bounding_box_test")

# Independent random streams; never reuse a number for a different purpose.
STREAM_TRAITS, STREAM_IMAGE, STREAM_IDENTITY, STREAM_DISTRACTOR, STREAM_BLACK = 1, 3, 4, 5, 6


@dataclass(frozen=True)
class ImageJob:
    """One image to render and where it goes."""

    identity: int  # internal id: the pid for real identities, above every pid for distractors
    pid: int  # the label written in the file name (0 for distractors, as in Market-1501)
    camera: int  # 1-based
    index: int  # image index within the identity; with (seed, identity) it seeds the image's generator
    frame: int  # frame number written in the file name, unique per (pid, folder)
    view: str
    folder: str  # one of SPLIT_FOLDERS

    @property
    def file_name(self) -> str:
        return f"{self.pid:04d}_c{self.camera}s1_{self.frame:06d}_01.jpg"


@dataclass(frozen=True)
class IdentityPlan:
    """One identity with its traits and all of its images."""

    identity: int
    pid: int
    split: str  # train / test / distractor
    traits: Traits
    cameras: Tuple[int, ...]
    jobs: Tuple[ImageJob, ...]


def image_rng(seed: int, identity: int, index: int) -> np.random.Generator:
    """The generator of one image, so it renders the same whatever else is rendered and in which order."""
    return np.random.default_rng([seed, STREAM_IMAGE, identity, index])


def _black_flags(seed: int, split_code: int, count: int, share: float) -> np.ndarray:
    # An exact count per split (not a coin flip per identity) keeps the recorded share close on small splits.
    flags = np.zeros(count, dtype=bool)
    chosen = int(round(share * count))
    flags[np.random.default_rng([seed, STREAM_BLACK, split_code]).permutation(count)[:chosen]] = True
    return flags


def _plan_identity(params: SyntheticParams, cameras: List[Camera], identity: int, split: str,
                   black: bool) -> IdentityPlan:
    rng = np.random.default_rng([params.seed, STREAM_IDENTITY, identity])
    count = int(rng.integers(params.min_cameras_per_id, params.num_cameras + 1))
    cams = sorted(int(c) + 1 for c in rng.choice(params.num_cameras, size=count, replace=False))
    low, high = params.images_per_camera
    per_camera = [int(n) for n in rng.integers(low, high + 1, size=count)]
    # The test split keeps one camera for the gallery only, so every query has a match in another camera.
    gallery_only = cams[int(rng.integers(count))] if split == "test" else None
    jobs, index = [], 0
    for cam, n in zip(cams, per_camera):
        views = tracklet_views(rng, cameras[cam - 1], n)
        query_pick = int(rng.integers(n)) if split == "test" and cam != gallery_only else -1
        for k, view in enumerate(views):
            if split == "train":
                folder = "bounding_box_train"
            else:
                folder = "query" if k == query_pick else "bounding_box_test"
            jobs.append(ImageJob(identity, identity, cam, index, index, view, folder))
            index += 1
    traits = sample_traits(np.random.default_rng([params.seed, STREAM_TRAITS, identity]), black)
    return IdentityPlan(identity, identity, split, traits, tuple(cams), tuple(jobs))


def _plan_distractor(params: SyntheticParams, cameras: List[Camera], number: int, black: bool) -> IdentityPlan:
    identity = params.num_train_ids + params.num_test_ids + number + 1
    rng = np.random.default_rng([params.seed, STREAM_DISTRACTOR, number])
    cam = int(rng.integers(params.num_cameras)) + 1
    job = ImageJob(identity, 0, cam, 0, number, sample_view(rng, cameras[cam - 1]), "bounding_box_test")
    traits = sample_traits(np.random.default_rng([params.seed, STREAM_TRAITS, identity]), black)
    return IdentityPlan(identity, 0, "distractor", traits, (cam,), (job,))


def build_plan(params: SyntheticParams) -> Tuple[List[Camera], List[IdentityPlan]]:
    """Cameras and every identity's plan: train pids first, then test pids (disjoint), then distractors."""
    cameras = build_cameras(params.seed, params.num_cameras)
    share = params.black_clothes_share
    plans = []
    train_black = _black_flags(params.seed, 0, params.num_train_ids, share)
    for k in range(params.num_train_ids):
        plans.append(_plan_identity(params, cameras, k + 1, "train", bool(train_black[k])))
    test_black = _black_flags(params.seed, 1, params.num_test_ids, share)
    for k in range(params.num_test_ids):
        plans.append(_plan_identity(params, cameras, params.num_train_ids + k + 1, "test", bool(test_black[k])))
    distractor_black = np.random.default_rng([params.seed, STREAM_BLACK, 2]).random(params.num_distractors) < share
    for k in range(params.num_distractors):
        plans.append(_plan_distractor(params, cameras, k, bool(distractor_black[k])))
    return cameras, plans
