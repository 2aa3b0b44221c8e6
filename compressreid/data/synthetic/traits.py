"""Persistent identity traits (clothes, hair, accessories, body shape) and how they are drawn from a seed."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Optional

import numpy as np

from compressreid.data.synthetic import palette as pal
from compressreid.data.synthetic.palette import RGB

UPPER_PATTERNS = ("solid", "hstripes", "vstripes", "checks", "print", "jacket", "sleeves")
UPPER_PATTERN_WEIGHTS = (40, 12, 5, 9, 13, 12, 9)
PRINT_SHAPES = ("circle", "square", "bars", "triangle")
HAIR_STYLES = ("bald", "short", "medium", "long", "ponytail", "bun")
HAIR_STYLE_WEIGHTS = (4, 36, 18, 20, 14, 8)
LOWER_TYPES = ("trousers", "shorts", "skirt")
LOWER_TYPE_WEIGHTS = (70, 16, 14)
BAGS = ("none", "backpack", "shoulder_bag", "handbag")
BAG_WEIGHTS = (44, 26, 18, 12)


@dataclass(frozen=True)
class Body:
    """Body proportions as fractions of the figure height (the camera adds its own scale on top)."""

    height: float  # figure height relative to the tallest identity
    head: float  # head height
    shoulders: float  # shoulder width
    hips: float  # hip width
    legs: float  # hip-to-sole length
    build: float  # limb thickness multiplier


@dataclass(frozen=True)
class Traits:
    """Everything that stays the same for one identity across cameras and images.

    Colour fields are RGB after a small per-identity jitter; the ``*_name`` fields keep the palette entry for
    the metadata summary.
    """

    black_clothes: bool
    body: Body
    skin: RGB
    skin_name: str
    hair: RGB
    hair_name: str
    hair_style: str
    hat: str  # none / cap / beanie
    hat_colour: RGB
    glasses: str  # none / glasses / sunglasses
    upper: RGB
    upper_name: str
    upper_pattern: str
    accent: RGB  # stripes, checks, print, inner shirt or sleeve colour
    accent_name: str
    print_shape: str
    stripe_period: float  # as a fraction of the figure height
    long_sleeves: bool
    collar: Optional[RGB]  # a visible shirt collar, a strong cue on near-black clothes
    lower: RGB
    lower_name: str
    lower_type: str
    shoes: RGB
    bag: str
    bag_colour: RGB
    bag_side: int  # +1: carried on the body's right, -1: on its left


def _choice(rng: np.random.Generator, options, weights) -> str:
    probs = np.asarray(weights, dtype=np.float64)
    return options[int(rng.choice(len(options), p=probs / probs.sum()))]


def _sample_body(rng: np.random.Generator) -> Body:
    return Body(
        height=float(rng.uniform(0.88, 1.0)),
        head=float(rng.uniform(0.118, 0.138)),
        shoulders=float(rng.uniform(0.2, 0.29)),
        hips=float(rng.uniform(0.15, 0.2)),
        legs=float(rng.uniform(0.44, 0.52)),
        build=float(rng.uniform(0.85, 1.2)),
    )


def _sample_garments(rng: np.random.Generator, black: bool) -> Dict[str, object]:
    if black:
        upper_name = pal.pick(rng, pal.BLACK_COLOURS)
        lower_name = pal.pick(rng, pal.BLACK_COLOURS)
        upper, lower = pal.BLACK_COLOURS[upper_name], pal.BLACK_COLOURS[lower_name]
        # Mostly plain: the head and shoulders must carry the identity, not a loud pattern.
        pattern = _choice(rng, ("solid", "print", "jacket"), (75, 10, 15))
        lower_type = _choice(rng, LOWER_TYPES, (88, 4, 8))
        jitter_amount = 4.0
    else:
        upper_name = pal.pick(rng, pal.UPPER_COLOURS, pal.UPPER_WEIGHTS)
        lower_name = pal.pick(rng, pal.LOWER_COLOURS, pal.LOWER_WEIGHTS)
        upper, lower = pal.UPPER_COLOURS[upper_name], pal.LOWER_COLOURS[lower_name]
        pattern = _choice(rng, UPPER_PATTERNS, UPPER_PATTERN_WEIGHTS)
        lower_type = _choice(rng, LOWER_TYPES, LOWER_TYPE_WEIGHTS)
        jitter_amount = 10.0
    accent_name = pal.pick(rng, pal.ACCENT_COLOURS, pal.ACCENT_WEIGHTS)
    if accent_name == upper_name:  # a stripe in the garment's own colour would be invisible
        accent_name = "black" if upper_name == "white" else "white"
    return dict(
        upper=pal.jitter(rng, upper, jitter_amount),
        upper_name=upper_name,
        upper_pattern=pattern,
        accent=pal.jitter(rng, pal.ACCENT_COLOURS[accent_name], 8.0),
        accent_name=accent_name,
        print_shape=PRINT_SHAPES[int(rng.integers(len(PRINT_SHAPES)))],
        stripe_period=float(rng.uniform(0.035, 0.06)),
        long_sleeves=bool(rng.random() < (0.8 if black else 0.6)),
        lower=pal.jitter(rng, lower, jitter_amount),
        lower_name=lower_name,
        lower_type=lower_type,
    )


def _sample_head(rng: np.random.Generator, black: bool) -> Dict[str, object]:
    skin_name = pal.pick(rng, pal.SKIN_TONES, pal.SKIN_WEIGHTS)
    hair_name = pal.pick(rng, pal.HAIR_COLOURS, pal.HAIR_WEIGHTS)
    # Black-clothes identities get head cues a little more often so that they stay separable at all.
    hat = _choice(rng, ("none", "cap", "beanie"), (70, 16, 14) if not black else (58, 22, 20))
    glasses = _choice(rng, ("none", "glasses", "sunglasses"), (74, 16, 10) if not black else (60, 24, 16))
    collar_name = pal.pick(rng, pal.ACCENT_COLOURS, pal.ACCENT_WEIGHTS)
    has_collar = rng.random() < (0.55 if black else 0.2)
    return dict(
        skin=pal.jitter(rng, pal.SKIN_TONES[skin_name], 6.0),
        skin_name=skin_name,
        hair=pal.jitter(rng, pal.HAIR_COLOURS[hair_name], 6.0),
        hair_name=hair_name,
        hair_style=_choice(rng, HAIR_STYLES, HAIR_STYLE_WEIGHTS),
        hat=hat,
        hat_colour=pal.HAT_COLOURS[pal.pick(rng, pal.HAT_COLOURS)],
        glasses=glasses,
        collar=pal.ACCENT_COLOURS[collar_name] if has_collar else None,
    )


def sample_traits(rng: np.random.Generator, black_clothes: bool) -> Traits:
    """Draw one identity's traits; the caller derives ``rng`` from (seed, identity) so order never matters."""
    body = _sample_body(rng)
    garments = _sample_garments(rng, black_clothes)
    head = _sample_head(rng, black_clothes)
    bag = _choice(rng, BAGS, BAG_WEIGHTS)
    return Traits(
        black_clothes=bool(black_clothes),
        body=body,
        shoes=pal.SHOE_COLOURS[pal.pick(rng, pal.SHOE_COLOURS, pal.SHOE_WEIGHTS)],
        bag=bag,
        bag_colour=pal.jitter(rng, pal.BAG_COLOURS[pal.pick(rng, pal.BAG_COLOURS, pal.BAG_WEIGHTS)], 6.0),
        bag_side=1 if rng.random() < 0.5 else -1,
        **garments,
        **head,
    )


def summarize_traits(traits: Traits) -> Dict[str, object]:
    """A short JSON-able description for ``identities.json`` (names, not RGB values)."""
    return {
        "black_clothes": traits.black_clothes,
        "upper": traits.upper_name,
        "upper_pattern": traits.upper_pattern,
        "accent": traits.accent_name,
        "long_sleeves": traits.long_sleeves,
        "lower": traits.lower_name,
        "lower_type": traits.lower_type,
        "bag": traits.bag,
        "hair": traits.hair_name,
        "hair_style": traits.hair_style,
        "skin": traits.skin_name,
        "hat": traits.hat,
        "glasses": traits.glasses,
        "collar": traits.collar is not None,
        "height": round(traits.body.height, 3),
        "shoulders": round(traits.body.shoulders, 3),
        "legs": round(traits.body.legs, 3),
    }
