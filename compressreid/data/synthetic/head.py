"""Head and shoulders: neck, face, hair styles, hats and glasses, which carry identity for near-black clothes."""

from __future__ import annotations

from PIL import Image, ImageDraw

from compressreid.data.synthetic.geometry import Geometry
from compressreid.data.synthetic.palette import shade
from compressreid.data.synthetic.traits import Traits

def draw_hair_behind(layer: Image.Image, geo: Geometry, traits: Traits, view: str) -> None:
    """Hair that falls behind the shoulders: drawn before the torso so the body covers its lower part."""
    if traits.hair_style not in ("long", "medium"):
        return
    draw = ImageDraw.Draw(layer)
    x0, y0, x1, y1 = geo.head_box()
    w = x1 - x0
    hair = shade(traits.hair, 0.85)
    if traits.hair_style == "long":
        bottom = geo.shoulder_y + 0.11 * geo.fig
        if view == "side":
            draw.rounded_rectangle((x0 - 0.05 * w, y0 + 0.2 * w, geo.cx + 0.1 * w, bottom), radius=w * 0.3, fill=hair)
        else:
            draw.rounded_rectangle((x0 - 0.12 * w, y0 + 0.2 * w, x1 + 0.12 * w, bottom), radius=w * 0.35, fill=hair)
    elif view != "side":
        draw.rounded_rectangle((x0 - 0.08 * w, y0, x1 + 0.08 * w, y1 + 0.15 * geo.head_h), radius=w * 0.4, fill=hair)


def _draw_face(draw: ImageDraw.ImageDraw, geo: Geometry, traits: Traits, view: str) -> None:
    x0, y0, x1, y1 = geo.head_box()
    w, h = x1 - x0, y1 - y0
    eye_y = y0 + 0.52 * h
    dark = (30, 26, 26)
    if view == "front":
        r = max(0.6, 0.055 * w)
        for ex in (geo.cx - 0.2 * w, geo.cx + 0.2 * w):
            draw.ellipse((ex - r, eye_y - r, ex + r, eye_y + r), fill=dark)
        mouth = shade(traits.skin, 0.75)
        draw.line((geo.cx - 0.12 * w, y0 + 0.78 * h, geo.cx + 0.12 * w, y0 + 0.78 * h), fill=mouth, width=1)
    elif view == "side":
        # A nose bump makes the profile read as a face rather than a ball.
        draw.polygon([(x1 - 0.05 * w, eye_y), (x1 + 0.1 * w, y0 + 0.66 * h), (x1 - 0.05 * w, y0 + 0.7 * h)],
                     fill=traits.skin)
        r = max(0.6, 0.05 * w)
        ex = x1 - 0.22 * w
        draw.ellipse((ex - r, eye_y - r, ex + r, eye_y + r), fill=dark)


def _draw_glasses(draw: ImageDraw.ImageDraw, geo: Geometry, traits: Traits, view: str) -> None:
    if traits.glasses == "none" or view == "back":
        return
    x0, y0, x1, y1 = geo.head_box()
    w, h = x1 - x0, y1 - y0
    eye_y = y0 + 0.52 * h
    dark = (18, 18, 20)
    lw = max(1, int(round(0.05 * w)))
    if view == "side":
        draw.rectangle((x1 - 0.32 * w, eye_y - 0.07 * h, x1 - 0.02 * w, eye_y + 0.07 * h),
                       fill=dark if traits.glasses == "sunglasses" else None, outline=dark, width=lw)
        draw.line((x1 - 0.32 * w, eye_y, geo.cx - 0.05 * w, eye_y - 0.03 * h), fill=dark, width=lw)
        return
    for ex in (geo.cx - 0.2 * w, geo.cx + 0.2 * w):
        box = (ex - 0.17 * w, eye_y - 0.08 * h, ex + 0.17 * w, eye_y + 0.08 * h)
        if traits.glasses == "sunglasses":
            draw.rectangle(box, fill=dark)
        else:
            draw.rectangle(box, outline=dark, width=lw)
    draw.line((x0, eye_y, x1, eye_y), fill=dark, width=lw)


def _draw_hair_top(draw: ImageDraw.ImageDraw, geo: Geometry, traits: Traits, view: str) -> None:
    style = traits.hair_style
    if style == "bald":
        return
    x0, y0, x1, y1 = geo.head_box()
    w, h = x1 - x0, y1 - y0
    hair = traits.hair
    pad = 0.06 * w
    if view == "back":
        # From behind the hair is most of what is seen of the head.
        reach = 0.82 if style == "short" else 1.05
        draw.rounded_rectangle((x0 - pad, y0 - pad, x1 + pad, y0 + reach * h), radius=w * 0.45, fill=hair)
    elif view == "side":
        draw.chord((x0 - pad, y0 - pad, x1 + pad, y0 + 0.85 * h), 180, 360, fill=hair)
        reach = 0.7 if style == "short" else 0.95
        draw.rounded_rectangle((x0 - pad, y0 + 0.1 * h, geo.cx + 0.05 * w, y0 + reach * h), radius=w * 0.3, fill=hair)
    else:
        depth = 0.62 if style == "short" else 0.75
        draw.chord((x0 - pad, y0 - pad, x1 + pad, y0 + depth * h), 180, 360, fill=hair)
        if style in ("medium", "long"):  # hair framing the face
            for sx in (x0 - pad, x1 - 0.16 * w):
                draw.rectangle((sx, y0 + 0.2 * h, sx + 0.16 * w + pad, y0 + 0.9 * h), fill=hair)
    _draw_hair_extras(draw, geo, traits, view)


def _draw_hair_extras(draw: ImageDraw.ImageDraw, geo: Geometry, traits: Traits, view: str) -> None:
    x0, y0, x1, y1 = geo.head_box()
    w, h = x1 - x0, y1 - y0
    if traits.hair_style == "bun" and traits.hat == "none":
        bx = geo.cx - 0.35 * w if view == "side" else geo.cx
        draw.ellipse((bx - 0.26 * w, y0 - 0.28 * h, bx + 0.26 * w, y0 + 0.1 * h), fill=traits.hair)
    elif traits.hair_style == "ponytail" and view != "front":
        tx = x0 - 0.05 * w if view == "side" else geo.cx
        draw.rounded_rectangle((tx - 0.16 * w, y0 + 0.35 * h, tx + 0.16 * w, y1 + 0.45 * h), radius=w * 0.15,
                               fill=traits.hair)
    elif traits.hair_style == "long" and view == "back":
        draw.rounded_rectangle((x0 - 0.1 * w, y0 + 0.5 * h, x1 + 0.1 * w, geo.shoulder_y + 0.13 * geo.fig),
                               radius=w * 0.3, fill=traits.hair)


def _draw_hat(draw: ImageDraw.ImageDraw, geo: Geometry, traits: Traits, view: str) -> None:
    if traits.hat == "none":
        return
    x0, y0, x1, y1 = geo.head_box()
    w, h = x1 - x0, y1 - y0
    pad = 0.08 * w
    colour = traits.hat_colour
    if traits.hat == "beanie":
        draw.chord((x0 - pad, y0 - 0.12 * h, x1 + pad, y0 + 0.95 * h), 180, 360, fill=colour)
        draw.rectangle((x0 - pad, y0 + 0.3 * h, x1 + pad, y0 + 0.42 * h), fill=shade(colour, 0.85))
        return
    draw.chord((x0 - pad, y0 - 0.06 * h, x1 + pad, y0 + 0.75 * h), 180, 360, fill=colour)
    brim = shade(colour, 0.8)
    if view == "front":
        draw.rectangle((x0 - pad, y0 + 0.3 * h, x1 + pad, y0 + 0.4 * h), fill=brim)
    elif view == "side":
        draw.rectangle((geo.cx, y0 + 0.3 * h, x1 + 0.35 * w, y0 + 0.4 * h), fill=brim)


def _draw_neck_and_collar(draw: ImageDraw.ImageDraw, geo: Geometry, traits: Traits, view: str) -> None:
    x0, y0, x1, y1 = geo.head_box()
    w = x1 - x0
    nw = 0.22 * w if view != "side" else 0.28 * w
    draw.rectangle((geo.cx - nw, y1 - 0.1 * geo.head_h, geo.cx + nw, geo.shoulder_y + 0.01 * geo.fig),
                   fill=shade(traits.skin, 0.9))
    if traits.collar is None:
        return
    sy, f = geo.shoulder_y, geo.fig
    if view == "front":  # the two wings of a shirt collar either side of the neck
        for sign in (-1.0, 1.0):
            draw.polygon([(geo.cx + sign * nw * 1.6, sy - 0.01 * f), (geo.cx + sign * nw * 0.2, sy + 0.035 * f),
                          (geo.cx + sign * nw * 0.3, sy - 0.005 * f)], fill=traits.collar)
    else:
        draw.rectangle((geo.cx - nw * 1.2, sy - 0.012 * f, geo.cx + nw * 1.2, sy + 0.008 * f), fill=traits.collar)


def draw_head(layer: Image.Image, geo: Geometry, traits: Traits, view: str) -> None:
    """Neck and collar, then the head with face, hair, hat and glasses as seen from ``view``."""
    draw = ImageDraw.Draw(layer)
    _draw_neck_and_collar(draw, geo, traits, view)
    draw.ellipse(geo.head_box(), fill=traits.skin)
    _draw_face(draw, geo, traits, view)
    _draw_hair_top(draw, geo, traits, view)
    _draw_hat(draw, geo, traits, view)
    _draw_glasses(draw, geo, traits, view)
