"""Named colour palettes the identity traits draw from, deliberately small so that identities share colours."""

from __future__ import annotations

from typing import Dict, Sequence, Tuple

import numpy as np

RGB = Tuple[int, int, int]

# Garment palettes are short and include near neighbours (navy/blue, grey/charcoal, beige/white) on purpose: after a
# camera's colour cast two identities in neighbouring colours look alike, so colour alone cannot separate them.
UPPER_COLOURS: Dict[str, RGB] = {
    "white": (222, 222, 216),
    "light_grey": (168, 168, 166),
    "grey": (112, 112, 116),
    "charcoal": (62, 62, 68),
    "navy": (34, 40, 82),
    "blue": (48, 78, 160),
    "light_blue": (122, 164, 206),
    "red": (176, 34, 40),
    "maroon": (108, 30, 40),
    "green": (52, 116, 66),
    "olive": (106, 110, 58),
    "beige": (198, 180, 146),
    "brown": (112, 78, 52),
    "pink": (222, 142, 166),
    "yellow": (216, 186, 64),
    "purple": (92, 58, 118),
}
UPPER_WEIGHTS = (10, 6, 7, 6, 7, 7, 5, 5, 3, 4, 3, 5, 4, 3, 3, 2)

LOWER_COLOURS: Dict[str, RGB] = {
    "denim": (58, 80, 122),
    "dark_denim": (38, 48, 76),
    "light_denim": (112, 136, 172),
    "charcoal": (56, 56, 60),
    "grey": (112, 112, 114),
    "khaki": (184, 164, 120),
    "brown": (98, 74, 54),
    "navy": (34, 38, 70),
    "white": (214, 214, 208),
    "olive": (88, 94, 60),
}
LOWER_WEIGHTS = (12, 8, 5, 8, 6, 6, 3, 5, 2, 3)

# Near-black garments: only a faint tint and lightness tell them apart, which is the point of the black-clothes case.
BLACK_COLOURS: Dict[str, RGB] = {
    "black": (20, 20, 22),
    "black_blue": (20, 22, 32),
    "black_brown": (30, 24, 22),
    "black_grey": (34, 34, 36),
}

# Secondary colours for stripes, checks, prints, collars and inner shirts.
ACCENT_COLOURS: Dict[str, RGB] = {
    "white": (230, 230, 226),
    "black": (24, 24, 26),
    "navy": (30, 36, 80),
    "red": (184, 36, 42),
    "grey": (128, 128, 130),
    "yellow": (222, 192, 70),
    "light_blue": (130, 170, 212),
    "green": (60, 130, 74),
}
ACCENT_WEIGHTS = (10, 6, 4, 4, 4, 2, 3, 2)

SKIN_TONES: Dict[str, RGB] = {
    "very_light": (240, 208, 184),
    "light": (226, 182, 152),
    "medium": (198, 150, 114),
    "tan": (166, 116, 82),
    "brown": (122, 82, 56),
    "dark": (84, 58, 42),
}
SKIN_WEIGHTS = (3, 5, 4, 3, 2, 2)

HAIR_COLOURS: Dict[str, RGB] = {
    "black": (22, 18, 18),
    "dark_brown": (56, 38, 28),
    "brown": (104, 70, 44),
    "blonde": (200, 168, 108),
    "auburn": (138, 64, 36),
    "grey": (150, 148, 146),
    "white": (212, 210, 204),
}
HAIR_WEIGHTS = (10, 8, 5, 3, 2, 2, 1)

HAT_COLOURS: Dict[str, RGB] = {
    "black": (26, 26, 28),
    "white": (226, 226, 222),
    "navy": (32, 38, 80),
    "red": (178, 36, 42),
    "beige": (196, 178, 142),
    "grey": (120, 120, 124),
}

BAG_COLOURS: Dict[str, RGB] = {
    "black": (28, 28, 30),
    "grey": (108, 108, 112),
    "navy": (36, 42, 82),
    "brown": (110, 74, 46),
    "red": (170, 40, 44),
    "beige": (190, 172, 136),
    "green": (56, 104, 64),
}
BAG_WEIGHTS = (8, 4, 4, 4, 2, 3, 2)

SHOE_COLOURS: Dict[str, RGB] = {
    "black": (26, 26, 28),
    "white": (224, 224, 220),
    "brown": (96, 64, 40),
    "grey": (120, 120, 124),
    "red": (172, 40, 44),
}
SHOE_WEIGHTS = (8, 7, 3, 3, 1)


def pick(rng: np.random.Generator, palette: Dict[str, RGB], weights: Sequence[float] = ()) -> str:
    """Draw a colour name from ``palette``; uniform unless ``weights`` (same order as the palette) are given."""
    names = list(palette)
    if not weights:
        return names[int(rng.integers(len(names)))]
    probs = np.asarray(weights, dtype=np.float64)
    return names[int(rng.choice(len(names), p=probs / probs.sum()))]


def jitter(rng: np.random.Generator, colour: RGB, amount: float) -> RGB:
    """Shift a colour by a shared lightness offset plus a smaller per-channel tint, clipped to [0, 255]."""
    light = rng.normal(0.0, amount)
    tint = rng.normal(0.0, amount * 0.4, size=3)
    return tuple(int(np.clip(c + light + t, 0, 255)) for c, t in zip(colour, tint))


def shade(colour: RGB, factor: float) -> RGB:
    """Darken (factor < 1) or lighten (factor > 1) a colour, e.g. for the far arm or a garment's shadowed side."""
    return tuple(int(min(255, max(0, round(c * factor)))) for c in colour)
