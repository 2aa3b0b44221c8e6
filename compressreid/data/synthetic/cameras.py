"""Camera models: illumination, colour cast, viewpoint mix, framing, blur, resolution, scene and occlusion."""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, Tuple

import numpy as np

from compressreid.data.synthetic.palette import RGB, jitter

VIEWS = ("front", "back", "left", "right")


@dataclass(frozen=True)
class Camera:
    """One fixed camera; every image it takes shares these settings up to a small per-image jitter."""

    index: int  # 1-based, as in the file names
    gain: float  # overall brightness multiplier
    cast: Tuple[float, float, float]  # per-channel multiplier (warm, cool, fluorescent green...)
    contrast: float
    view_probs: Tuple[float, float, float, float]  # over VIEWS
    scale: Tuple[float, float]  # figure height as a fraction of the image height
    blur: float  # Gaussian radius in output pixels
    lowres: float  # < 1: the camera sees the person at this fraction of the output resolution
    noise: float  # sensor noise sigma in 0-255 units
    wall: RGB
    ground: RGB
    horizon: float  # wall/ground boundary as a fraction of the image height
    clutter: int  # background shapes per image
    occlusion: float  # probability that an image has an occluder


# Hand-made archetypes keep the cameras different from each other whatever the seed; the seed only jitters them.
# (gain, cast, contrast, view_probs, scale, blur, lowres, noise, wall, ground, horizon, clutter, occlusion)
_ARCHETYPES = (
    (1.10, (1.08, 1.00, 0.86), 1.00, (0.45, 0.45, 0.05, 0.05), (0.80, 0.95), 0.3, 1.0, 3.0,
     (150, 146, 132), (120, 116, 108), 0.62, 5, 0.15),  # sunny street, warm, walking towards/away
    (0.90, (0.94, 1.06, 0.94), 0.90, (0.10, 0.10, 0.40, 0.40), (0.75, 0.92), 0.6, 1.0, 4.0,
     (178, 184, 170), (150, 150, 144), 0.70, 4, 0.25),  # fluorescent corridor, side views
    (0.70, (0.88, 0.96, 1.14), 1.05, (0.30, 0.30, 0.20, 0.20), (0.78, 0.95), 0.5, 0.75, 6.0,
     (70, 78, 96), (62, 64, 70), 0.58, 6, 0.20),  # dim evening, blue, noisy
    (1.22, (1.00, 1.00, 1.00), 0.78, (0.55, 0.25, 0.10, 0.10), (0.82, 0.98), 0.2, 1.0, 2.0,
     (200, 200, 196), (176, 172, 166), 0.66, 3, 0.10),  # overexposed lobby, washed out
    (1.00, (1.02, 1.00, 0.96), 0.95, (0.20, 0.40, 0.20, 0.20), (0.72, 0.88), 0.9, 0.55, 4.0,
     (112, 122, 104), (96, 104, 88), 0.55, 7, 0.30),  # far camera over a park, low resolution
    (0.82, (0.96, 0.98, 1.08), 1.00, (0.25, 0.25, 0.25, 0.25), (0.78, 0.96), 0.4, 0.8, 3.5,
     (128, 112, 104), (92, 88, 86), 0.64, 5, 0.25),  # shaded entrance, cool, mixed views
)


def _jitter_view_probs(rng: np.random.Generator, probs) -> Tuple[float, float, float, float]:
    noisy = np.asarray(probs, dtype=np.float64) * rng.uniform(0.8, 1.25, size=4)
    noisy = noisy / noisy.sum()
    return tuple(float(p) for p in noisy)


def build_camera(seed: int, index: int) -> Camera:
    """Camera ``index`` (1-based) of the scene; depends only on (seed, index)."""
    rng = np.random.default_rng([seed, 7, index])
    (gain, cast, contrast, views, scale, blur, lowres, noise, wall, ground, horizon, clutter,
     occlusion) = _ARCHETYPES[(index - 1) % len(_ARCHETYPES)]
    return Camera(
        index=index,
        gain=float(gain * rng.uniform(0.94, 1.06)),
        cast=tuple(float(c * rng.uniform(0.97, 1.03)) for c in cast),
        contrast=float(contrast * rng.uniform(0.95, 1.05)),
        view_probs=_jitter_view_probs(rng, views),
        scale=(float(scale[0]), float(scale[1])),
        blur=float(blur * rng.uniform(0.8, 1.2)),
        lowres=float(min(1.0, lowres * rng.uniform(0.95, 1.05))),
        noise=float(noise),
        wall=jitter(rng, wall, 10.0),
        ground=jitter(rng, ground, 10.0),
        horizon=float(horizon + rng.uniform(-0.04, 0.04)),
        clutter=int(clutter),
        occlusion=float(occlusion),
    )


def build_cameras(seed: int, num_cameras: int) -> List[Camera]:
    """All cameras of the scene, 1-based indices in order."""
    return [build_camera(seed, index) for index in range(1, num_cameras + 1)]


def sample_view(rng: np.random.Generator, camera: Camera) -> str:
    """Draw a viewpoint from the camera's mix (a person crossing this camera walks in one direction)."""
    return VIEWS[int(rng.choice(len(VIEWS), p=np.asarray(camera.view_probs)))]


def tracklet_views(rng: np.random.Generator, camera: Camera, count: int) -> List[str]:
    """Views of ``count`` consecutive frames in one camera: one walking direction, occasionally turning."""
    main = sample_view(rng, camera)
    return [main if rng.random() < 0.8 else sample_view(rng, camera) for _ in range(count)]
