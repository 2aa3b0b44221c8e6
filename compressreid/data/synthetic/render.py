"""Renders one pedestrian image: framing, background, figure, occluder, then the camera's optics and sensor."""

from __future__ import annotations

import dataclasses

import numpy as np
from PIL import Image, ImageFilter

from compressreid.data.synthetic.cameras import VIEWS, Camera
from compressreid.data.synthetic.figure import draw_pedestrian
from compressreid.data.synthetic.geometry import build_geometry
from compressreid.data.synthetic.scene import draw_background, draw_occluder
from compressreid.data.synthetic.traits import Traits
from compressreid.errors import ConfigError

# Drawing at twice the output size and box-filtering down gives anti-aliased edges without PIL's slow AA paths.
SUPERSAMPLE = 2


def _draw_scene(traits: Traits, camera: Camera, view: str, rng: np.random.Generator, size) -> Image.Image:
    width, height = size
    canvas = draw_background(size, camera, rng)
    # Detector boxes are loose and misaligned: the person's scale and offset vary, feet are sometimes cut off.
    fig = height * float(rng.uniform(*camera.scale))
    feet = height * float(0.985 + rng.uniform(-0.05, 0.04))
    cx = width * float(0.5 + rng.uniform(-0.1, 0.1))
    stride = float(rng.uniform(-1.0, 1.0))
    mirrored = view == "left"
    if mirrored:
        # Drawn facing right, then flipped; the near side of a left-facing person is its left, so swap the bag.
        traits = dataclasses.replace(traits, bag_side=-traits.bag_side)
        cx = width - cx
    side = view in ("left", "right")
    geo = build_geometry(traits.body, cx, feet, fig, side, stride)
    layer = Image.new("RGBA", size, (0, 0, 0, 0))
    draw_pedestrian(layer, geo, traits, "side" if side else view)
    if mirrored:
        layer = layer.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    canvas.paste(layer, (0, 0), layer)
    if rng.random() < camera.occlusion:
        draw_occluder(canvas, rng)
    return canvas


def _apply_optics(image: Image.Image, camera: Camera, rng: np.random.Generator) -> Image.Image:
    width, height = image.size
    if camera.lowres < 1.0:
        # A far or cheap camera: the person is captured with fewer pixels, then upscaled by the detector crop.
        factor = camera.lowres * float(rng.uniform(0.9, 1.1))
        small = (max(4, round(width * factor)), max(8, round(height * factor)))
        image = image.resize(small, Image.Resampling.BILINEAR).resize((width, height), Image.Resampling.BILINEAR)
    radius = camera.blur * float(rng.uniform(0.6, 1.4)) * width / 64.0
    if radius > 0.05:
        image = image.filter(ImageFilter.GaussianBlur(radius))
    return image


def _apply_sensor(image: Image.Image, camera: Camera, rng: np.random.Generator) -> Image.Image:
    pixels = np.asarray(image, dtype=np.float32)
    gain = camera.gain * float(rng.uniform(0.88, 1.12))
    cast = np.asarray(camera.cast, dtype=np.float32) * rng.uniform(0.96, 1.04, size=3).astype(np.float32)
    pixels = pixels * (gain * cast)
    mean = float(pixels.mean())
    pixels = (pixels - mean) * camera.contrast + mean
    # Light falls off towards one side of the frame (a lamp, a window), differently in each image.
    ramp = np.linspace(1.0 - 0.1, 1.0 + 0.1, image.size[0], dtype=np.float32)
    if rng.random() < 0.5:
        ramp = ramp[::-1]
    pixels = pixels * ramp[None, :, None]
    pixels = pixels + rng.normal(0.0, camera.noise, size=pixels.shape).astype(np.float32)
    return Image.fromarray(np.clip(pixels + 0.5, 0, 255).astype(np.uint8), "RGB")


def render_pedestrian(traits: Traits, camera: Camera, view: str, rng: np.random.Generator, height: int,
                      width: int) -> Image.Image:
    """Render one detector crop of a pedestrian as ``camera`` sees it.

    Args:
        traits: the identity's persistent appearance.
        camera: the camera taking the picture.
        view: one of ``cameras.VIEWS`` ('front', 'back', 'left', 'right').
        rng: the image's own generator; every random choice of this image is drawn from it.
        height: output height in pixels.
        width: output width in pixels.

    Returns:
        An RGB image of exactly ``width`` x ``height`` pixels.
    """
    if view not in VIEWS:
        raise ConfigError(f"view must be one of {VIEWS}, got {view!r}")
    canvas = _draw_scene(traits, camera, view, rng, (width * SUPERSAMPLE, height * SUPERSAMPLE))
    image = canvas.resize((width, height), Image.Resampling.BOX)
    image = _apply_optics(image, camera, rng)
    return _apply_sensor(image, camera, rng)
