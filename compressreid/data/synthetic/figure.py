"""Draws one pedestrian (body, garments, head, bag) onto a transparent layer in the right order for its view."""

from __future__ import annotations

from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw

from compressreid.data.synthetic import accessories, head
from compressreid.data.synthetic.geometry import Geometry, Point
from compressreid.data.synthetic.palette import shade
from compressreid.data.synthetic.traits import Traits


def limb(draw: ImageDraw.ImageDraw, points: Sequence[Point], width: float, fill) -> None:
    """A thick poly-line with round caps and joints (PIL's wide lines have square ends)."""
    w = max(1, int(round(width)))
    draw.line([tuple(p) for p in points], fill=fill, width=w, joint="curve")
    r = w / 2.0
    for x, y in (points[0], points[-1]):
        draw.ellipse((x - r, y - r, x + r, y + r), fill=fill)


def garment_pattern(traits: Traits, geo: Geometry, size) -> np.ndarray:
    """RGB array of the upper garment's fabric over the whole canvas; stripes follow the body, not the frame."""
    width, height = size
    base = np.asarray(traits.upper, dtype=np.float32)
    accent = np.asarray(traits.accent, dtype=np.float32)
    period = max(2.0, traits.stripe_period * geo.fig)
    ys = (np.arange(height, dtype=np.float32) - geo.shoulder_y)[:, None]
    xs = (np.arange(width, dtype=np.float32) - geo.cx)[None, :]
    pattern = traits.upper_pattern
    if pattern == "hstripes":
        amount = np.broadcast_to(((ys // (period / 2)) % 2).astype(np.float32), (height, width))
    elif pattern == "vstripes":
        amount = np.broadcast_to(((xs // (period / 3)) % 2).astype(np.float32), (height, width))
    elif pattern == "checks":
        amount = 0.5 * (((ys // (period / 2)) % 2) + ((xs // (period / 2)) % 2))
    else:
        return np.broadcast_to(base.astype(np.uint8), (height, width, 3))
    amount = amount[..., None]
    return (base * (1.0 - amount) + accent * amount).astype(np.uint8)


def _paste_fabric(layer: Image.Image, fabric: np.ndarray, factor: float, draw_mask) -> None:
    """Paint ``fabric`` (darkened by ``factor``) through a mask drawn by ``draw_mask(ImageDraw)``."""
    mask = Image.new("L", layer.size, 0)
    draw_mask(ImageDraw.Draw(mask))
    tinted = fabric if factor == 1.0 else (fabric.astype(np.float32) * factor).astype(np.uint8)
    layer.paste(Image.fromarray(np.ascontiguousarray(tinted), "RGB"), (0, 0), mask)


def _draw_arm(layer: Image.Image, geo: Geometry, traits: Traits, fabric: np.ndarray, arm, factor: float) -> None:
    draw = ImageDraw.Draw(layer)
    joint, elbow, hand = arm
    skin = shade(traits.skin, factor)
    limb(draw, [joint, elbow, hand], geo.arm_w * 0.85, skin)
    r = geo.arm_w * 0.55
    draw.ellipse((hand[0] - r, hand[1] - r, hand[0] + r, hand[1] + r), fill=skin)
    if traits.long_sleeves:
        sleeve = [joint, elbow, (elbow[0] + 0.9 * (hand[0] - elbow[0]), elbow[1] + 0.9 * (hand[1] - elbow[1]))]
    else:
        sleeve = [joint, (joint[0] + 0.8 * (elbow[0] - joint[0]), joint[1] + 0.8 * (elbow[1] - joint[1]))]
    if traits.upper_pattern == "sleeves":
        fabric = np.broadcast_to(np.asarray(traits.accent, dtype=np.uint8), fabric.shape)
    _paste_fabric(layer, fabric, factor, lambda d: limb(d, sleeve, geo.arm_w, 255))


def _draw_leg(draw: ImageDraw.ImageDraw, geo: Geometry, traits: Traits, leg, factor: float) -> None:
    (hx, hy), (ax, ay) = leg
    skin, cloth = shade(traits.skin, factor), shade(traits.lower, factor)
    bare = traits.lower_type != "trousers"
    limb(draw, [(hx, hy), (ax, ay)], geo.leg_w, skin if bare else cloth)
    if traits.lower_type == "shorts":
        knee = (hx + 0.42 * (ax - hx), hy + 0.42 * (ay - hy))
        limb(draw, [(hx, hy), knee], geo.leg_w * 1.12, cloth)
    sole = shade(traits.shoes, factor)
    h, w = geo.shoe_h, geo.leg_w * 0.62
    if geo.side:
        draw.ellipse((ax - w * 0.9, ay - h * 0.6, ax + w * 2.0, ay + h * 0.55), fill=sole)
    else:
        draw.ellipse((ax - w, ay - h * 0.6, ax + w, ay + h * 0.6), fill=sole)


def _draw_hips(draw: ImageDraw.ImageDraw, geo: Geometry, traits: Traits) -> None:
    """The garment block joining both legs: trouser seat, shorts, or a skirt reaching towards the knees."""
    f, cx, hy = geo.fig, geo.cx, geo.hip_y
    if traits.lower_type == "skirt":
        reach = 0.45 * (geo.feet - hy)
        flare = 1.5 if not geo.side else 1.35
        draw.polygon([(cx - geo.hips, hy - 0.02 * f), (cx + geo.hips, hy - 0.02 * f),
                      (cx + geo.hips * flare, hy + reach), (cx - geo.hips * flare, hy + reach)], fill=traits.lower)
        return
    draw.rectangle((cx - geo.hips, hy - 0.02 * f, cx + geo.hips, hy + 0.06 * f), fill=traits.lower)


def _draw_lower(layer: Image.Image, geo: Geometry, traits: Traits) -> None:
    draw = ImageDraw.Draw(layer)
    legs = geo.legs()
    if geo.side:
        _draw_leg(draw, geo, traits, legs[0], 0.78)  # far leg in shadow
        _draw_leg(draw, geo, traits, legs[1], 1.0)
    else:
        for leg in legs:
            _draw_leg(draw, geo, traits, leg, 1.0)
    _draw_hips(draw, geo, traits)


def _draw_torso(layer: Image.Image, geo: Geometry, fabric: np.ndarray) -> None:
    _paste_fabric(layer, fabric, 1.0, lambda d: d.polygon(geo.torso(), fill=255))


def draw_pedestrian(layer: Image.Image, geo: Geometry, traits: Traits, view: str) -> None:
    """Draw the whole figure; ``view`` is 'front', 'back' or 'side' (side faces +x, the near side is the right).

    Painter's order matters: whatever the viewer cannot see (a backpack from the front, a print from the back,
    the far arm in profile) is either skipped or drawn first so that nearer parts cover it.
    """
    fabric = garment_pattern(traits, geo, layer.size)
    arms = geo.arms()
    if view == "side":
        accessories.draw_bag(layer, geo, traits, view, near=False)
        _draw_arm(layer, geo, traits, fabric, arms[0], 0.78)
        _draw_lower(layer, geo, traits)
        head.draw_hair_behind(layer, geo, traits, view)
        accessories.draw_backpack(layer, geo, traits, view)
        _draw_torso(layer, geo, fabric)
        accessories.draw_chest(layer, geo, traits, view)
        head.draw_head(layer, geo, traits, view)
        _draw_arm(layer, geo, traits, fabric, arms[1], 0.92)
        accessories.draw_bag(layer, geo, traits, view, near=True)
        return
    if view == "front":
        head.draw_hair_behind(layer, geo, traits, view)
    _draw_lower(layer, geo, traits)
    _draw_torso(layer, geo, fabric)
    for arm in arms:
        _draw_arm(layer, geo, traits, fabric, arm, 0.9)
    accessories.draw_chest(layer, geo, traits, view)
    if view == "back":
        accessories.draw_backpack(layer, geo, traits, view)
    head.draw_head(layer, geo, traits, view)
    if view == "front":
        accessories.draw_backpack(layer, geo, traits, view)  # only its straps show from the front
    accessories.draw_bag(layer, geo, traits, view, near=True)

