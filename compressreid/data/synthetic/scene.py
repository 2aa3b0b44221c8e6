"""Camera-specific backgrounds with clutter, and occluders (pole, car, passer-by, bush, sign) drawn over a person."""

from __future__ import annotations

from typing import Tuple

import numpy as np
from PIL import Image, ImageDraw

from compressreid.data.synthetic import palette as pal
from compressreid.data.synthetic.cameras import Camera
from compressreid.data.synthetic.palette import RGB, jitter, shade

_CAR_COLOURS = ((222, 222, 220), (160, 162, 166), (28, 28, 30), (160, 34, 38), (40, 60, 130), (80, 82, 86))
_CLUTTER_COLOURS = ((40, 40, 44), (200, 196, 186), (160, 40, 40), (50, 90, 150), (210, 180, 70), (70, 110, 70))
OCCLUDERS = ("pole", "car", "person", "bush", "sign")
_OCCLUDER_WEIGHTS = (0.3, 0.2, 0.25, 0.15, 0.1)


def _uniform(rng: np.random.Generator, low: float, high: float) -> float:
    return float(rng.uniform(low, high))


def draw_background(size: Tuple[int, int], camera: Camera, rng: np.random.Generator) -> Image.Image:
    """The scene behind the person: wall and ground in the camera's colours plus random clutter."""
    width, height = size
    image = Image.new("RGB", size, jitter(rng, camera.wall, 6.0))
    draw = ImageDraw.Draw(image)
    horizon = height * (camera.horizon + _uniform(rng, -0.03, 0.03))
    draw.rectangle((0, horizon, width, height), fill=jitter(rng, camera.ground, 6.0))
    count = camera.clutter + int(rng.integers(-2, 3))
    for _ in range(max(0, count)):
        _draw_clutter_item(draw, width, horizon, camera, rng)
    # A curb or tile line makes the ground read as ground, and moves with the framing.
    line_y = horizon + _uniform(rng, 0.05, 0.3) * (height - horizon)
    draw.line((0, line_y, width, line_y), fill=shade(camera.ground, 0.8), width=max(1, height // 100))
    return image


def _draw_clutter_item(draw: ImageDraw.ImageDraw, width: int, horizon: float, camera: Camera,
                       rng: np.random.Generator) -> None:
    kind = int(rng.integers(4))
    x = _uniform(rng, -0.1, 1.0) * width
    if kind == 0:  # window or door: a darker or lighter patch of the wall
        w, h = _uniform(rng, 0.15, 0.45) * width, _uniform(rng, 0.1, 0.35) * horizon
        y = _uniform(rng, 0.0, 0.9) * (horizon - h)
        draw.rectangle((x, y, x + w, y + h), fill=shade(camera.wall, _uniform(rng, 0.55, 1.25)))
    elif kind == 1:  # distant pole or tree trunk
        w = max(1.0, _uniform(rng, 0.02, 0.06) * width)
        draw.rectangle((x, 0, x + w, horizon + _uniform(rng, 0.0, 0.1) * horizon), fill=shade(camera.wall, 0.5))
    elif kind == 2:  # a sign or poster in a saturated colour
        w, h = _uniform(rng, 0.1, 0.3) * width, _uniform(rng, 0.05, 0.15) * horizon
        y = _uniform(rng, 0.1, 0.8) * horizon
        colour = _CLUTTER_COLOURS[int(rng.integers(len(_CLUTTER_COLOURS)))]
        draw.rectangle((x, y, x + w, y + h), fill=colour)
    else:  # something standing on the ground far away (planter, bin, blurred passer-by)
        w, h = _uniform(rng, 0.08, 0.25) * width, _uniform(rng, 0.05, 0.2) * horizon
        colour = _CLUTTER_COLOURS[int(rng.integers(len(_CLUTTER_COLOURS)))]
        draw.rectangle((x, horizon - h, x + w, horizon + 0.02 * horizon), fill=shade(colour, 0.7))


def draw_occluder(image: Image.Image, rng: np.random.Generator) -> str:
    """Draw one occluder in front of the person and return its kind."""
    width, height = image.size
    draw = ImageDraw.Draw(image)
    kind = OCCLUDERS[int(rng.choice(len(OCCLUDERS), p=np.asarray(_OCCLUDER_WEIGHTS)))]
    left = rng.random() < 0.5
    if kind == "pole":
        w = _uniform(rng, 0.08, 0.16) * width
        x = _uniform(rng, 0.05, 0.95) * width - w / 2
        grey = int(rng.integers(60, 170))
        draw.rectangle((x, 0, x + w, height), fill=(grey, grey, grey + 4))
        draw.rectangle((x + 0.7 * w, 0, x + w, height), fill=(grey * 3 // 4,) * 3)
    elif kind == "car":
        top = _uniform(rng, 0.6, 0.8) * height
        reach = _uniform(rng, 0.5, 1.1) * width
        x0, x1 = (-0.2 * width, reach) if left else (width - reach, 1.2 * width)
        colour = _CAR_COLOURS[int(rng.integers(len(_CAR_COLOURS)))]
        draw.rounded_rectangle((x0, top, x1, height * 1.05), radius=0.06 * height, fill=colour)
        draw.rectangle((x0, top + 0.04 * height, x1, top + 0.09 * height), fill=shade(colour, 0.6))
        wheel = 0.55 * (x0 + x1)
        draw.ellipse((wheel - 0.18 * width, height * 0.93, wheel + 0.18 * width, height * 1.1), fill=(20, 20, 22))
    elif kind == "person":
        _draw_passer_by(draw, width, height, left, rng)
    elif kind == "bush":
        w, h = _uniform(rng, 0.5, 0.9) * width, _uniform(rng, 0.2, 0.35) * height
        x = -0.2 * width if left else width * 1.2 - w
        green = jitter(rng, (58, 104, 52), 14.0)
        draw.ellipse((x, height - h, x + w, height + 0.3 * h), fill=green)
    else:
        w, h = _uniform(rng, 0.3, 0.5) * width, _uniform(rng, 0.15, 0.3) * height
        x = -0.05 * width if left else width * 1.05 - w
        y = _uniform(rng, 0.3, 0.6) * height
        colour = _CLUTTER_COLOURS[int(rng.integers(len(_CLUTTER_COLOURS)))]
        draw.rectangle((x, y, x + w, y + h), fill=colour)
        draw.rectangle((x + 0.45 * w, y + h, x + 0.55 * w, height), fill=(90, 90, 92))
    return kind


def _draw_passer_by(draw: ImageDraw.ImageDraw, width: int, height: int, left: bool,
                    rng: np.random.Generator) -> None:
    """Part of another pedestrian at the frame edge, in random clothes: a classic ReID distractor."""
    cx = _uniform(rng, -0.12, 0.08) * width
    cx = cx if left else width - cx
    half = _uniform(rng, 0.18, 0.26) * width
    upper = pal.UPPER_COLOURS[pal.pick(rng, pal.UPPER_COLOURS, pal.UPPER_WEIGHTS)]
    lower = pal.LOWER_COLOURS[pal.pick(rng, pal.LOWER_COLOURS, pal.LOWER_WEIGHTS)]
    skin: RGB = pal.SKIN_TONES[pal.pick(rng, pal.SKIN_TONES)]
    top = _uniform(rng, -0.05, 0.1) * height
    shoulder, hip = top + 0.16 * height, top + 0.52 * height
    draw.ellipse((cx - 0.5 * half, top, cx + 0.5 * half, top + 0.14 * height), fill=skin)
    draw.rounded_rectangle((cx - half, shoulder, cx + half, hip + 0.04 * height), radius=0.3 * half, fill=upper)
    draw.rectangle((cx - 0.8 * half, hip, cx + 0.8 * half, height), fill=lower)
