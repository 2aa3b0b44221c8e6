"""View-dependent details: chest prints and open jackets (front only), backpacks (back and side), bags."""

from __future__ import annotations

from PIL import Image, ImageDraw

from compressreid.data.synthetic.geometry import Geometry
from compressreid.data.synthetic.palette import shade
from compressreid.data.synthetic.traits import Traits


def _draw_print(draw: ImageDraw.ImageDraw, geo: Geometry, traits: Traits) -> None:
    cx, cy = geo.cx, geo.shoulder_y + 0.09 * geo.fig
    s = 0.5 * geo.shoulders
    colour = traits.accent
    if traits.black_clothes:  # a print on black is a muted grey, not a second loud colour
        colour = (110, 110, 112)
    shape = traits.print_shape
    if shape == "circle":
        draw.ellipse((cx - s, cy - s, cx + s, cy + s), fill=colour)
    elif shape == "square":
        draw.rectangle((cx - s, cy - s * 0.8, cx + s, cy + s * 0.8), fill=colour)
    elif shape == "triangle":
        draw.polygon([(cx, cy - s), (cx + s, cy + s * 0.8), (cx - s, cy + s * 0.8)], fill=colour)
    else:  # a lettering block: three bars
        bar = max(1.0, 0.28 * s)
        for k in range(3):
            y = cy - s + k * 2 * bar
            draw.rectangle((cx - s * 1.1, y, cx + s * 1.1, y + bar), fill=colour)


def draw_chest(layer: Image.Image, geo: Geometry, traits: Traits, view: str) -> None:
    """Front-only garment details (print, open jacket) and the side view of a backpack strap."""
    draw = ImageDraw.Draw(layer)
    f, cx, sy = geo.fig, geo.cx, geo.shoulder_y
    bottom = geo.hip_y + 0.04 * f
    if traits.upper_pattern == "print" and view == "front":
        _draw_print(draw, geo, traits)
    if traits.upper_pattern == "jacket":
        if view == "front":
            s = geo.shoulders
            draw.polygon([(cx - 0.3 * s, sy), (cx + 0.3 * s, sy), (cx + 0.2 * s, bottom), (cx - 0.2 * s, bottom)],
                         fill=traits.accent)
        elif view == "side":
            d = geo.shoulders
            draw.polygon([(cx + 0.7 * d, sy + 0.02 * f), (cx + 0.98 * d, sy + 0.03 * f), (cx + 0.93 * d, bottom),
                          (cx + 0.72 * d, bottom)], fill=traits.accent)
    if traits.bag == "backpack" and view == "side":
        d, lw = geo.shoulders, max(1, int(round(0.02 * f)))
        draw.line((cx + 0.3 * d, sy, cx + 0.45 * d, sy + 0.16 * f), fill=shade(traits.bag_colour, 0.7), width=lw)


def draw_backpack(layer: Image.Image, geo: Geometry, traits: Traits, view: str) -> None:
    """Backpack body from behind, its protruding box in profile, only its straps from the front."""
    if traits.bag != "backpack":
        return
    draw = ImageDraw.Draw(layer)
    f, cx, sy = geo.fig, geo.cx, geo.shoulder_y
    colour = traits.bag_colour
    if view == "back":
        s = geo.shoulders
        box = (cx - 0.74 * s, sy + 0.025 * f, cx + 0.74 * s, sy + 0.27 * f)
        draw.rounded_rectangle(box, radius=0.03 * f, fill=colour)
        draw.rounded_rectangle((cx - 0.55 * s, sy + 0.16 * f, cx + 0.55 * s, sy + 0.255 * f), radius=0.02 * f,
                               fill=shade(colour, 0.78))
    elif view == "side":
        d = geo.shoulders
        draw.rounded_rectangle((cx - d - 0.085 * f, sy + 0.025 * f, cx - 0.6 * d, sy + 0.26 * f), radius=0.025 * f,
                               fill=colour)
    else:
        s, lw = geo.shoulders, max(1, int(round(0.022 * f)))
        strap = shade(colour, 0.75)
        for sign in (-1.0, 1.0):
            draw.line((cx + sign * 0.58 * s, sy + 0.005 * f, cx + sign * 0.52 * s, sy + 0.17 * f), fill=strap, width=lw)


def _image_sign(traits: Traits, view: str) -> float:
    """Which image side (-1 left, +1 right) the bag hangs on: the body's right is image-left from the front."""
    return -traits.bag_side if view == "front" else float(traits.bag_side)


def draw_bag(layer: Image.Image, geo: Geometry, traits: Traits, view: str, near: bool) -> None:
    """Shoulder bag or handbag. In profile the far-side bag is drawn first (``near=False``) and half hidden."""
    if traits.bag not in ("shoulder_bag", "handbag"):
        return
    if view == "side":
        # A side view faces +x, so the body's right side (bag_side=+1) is the one nearest the camera.
        if (traits.bag_side == 1) != near:
            return
    elif not near:
        return
    draw = ImageDraw.Draw(layer)
    f, colour = geo.fig, traits.bag_colour
    if traits.bag == "handbag":
        arms = geo.arms()
        if view == "side":
            hand = arms[1 if near else 0][2]
        else:
            hand = arms[0 if _image_sign(traits, view) < 0 else 1][2]
        hx, hy = hand
        top, bottom = hy + 0.012 * f, hy + 0.08 * f
        draw.polygon([(hx - 0.035 * f, top), (hx + 0.035 * f, top), (hx + 0.045 * f, bottom), (hx - 0.045 * f, bottom)],
                     fill=colour)
        return
    lw = max(1, int(round(0.014 * f)))
    strap = shade(colour, 0.7)
    top, bottom = geo.hip_y - 0.035 * f, geo.hip_y + 0.065 * f
    if view == "side":
        bx = geo.cx - 0.2 * geo.shoulders
        draw.line((geo.cx + 0.1 * geo.shoulders, geo.shoulder_y, bx, top), fill=strap, width=lw)
    else:
        sign = _image_sign(traits, view)
        bx = geo.cx + sign * (geo.hips + 0.035 * f)
        draw.line((geo.cx - sign * 0.75 * geo.shoulders, geo.shoulder_y + 0.005 * f, bx, top), fill=strap, width=lw)
    draw.rounded_rectangle((bx - 0.05 * f, top, bx + 0.05 * f, bottom), radius=0.012 * f, fill=colour)
