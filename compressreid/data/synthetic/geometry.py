"""Where a pedestrian's body parts lie on the canvas, from its body proportions, position and walking phase."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import List, Tuple

from compressreid.data.synthetic.traits import Body

Point = Tuple[float, float]
Box = Tuple[float, float, float, float]


@dataclass(frozen=True)
class Geometry:
    """Canvas coordinates of one pedestrian. Side views always face +x; the renderer mirrors for 'left'."""

    cx: float  # body axis
    top: float  # top of the head
    feet: float  # soles
    fig: float  # figure height in pixels
    side: bool  # side view (profile) rather than front/back
    stride: float  # walking phase in [-1, 1]; 0 = feet together
    head_h: float
    head_w: float
    shoulder_y: float
    hip_y: float
    shoulders: float  # half shoulder width (front/back) or half torso depth (side)
    hips: float  # half hip width (front/back) or half depth (side)
    arm_w: float
    leg_w: float
    shoe_h: float

    def head_box(self) -> Box:
        return (self.cx - self.head_w / 2, self.top, self.cx + self.head_w / 2, self.top + self.head_h)

    def torso(self) -> List[Point]:
        """Upper-garment outline from the shoulders to just below the hips."""
        f, cx, sy = self.fig, self.cx, self.shoulder_y
        bottom = self.hip_y + 0.045 * f
        if self.side:
            d = self.shoulders
            return [(cx - d, sy + 0.01 * f), (cx - 0.4 * d, sy - 0.004 * f), (cx + 0.8 * d, sy),
                    (cx + d, sy + 0.03 * f), (cx + d * 0.95, bottom), (cx - d * 1.05, bottom)]
        s, h, r = self.shoulders, self.hips * 1.05, 0.028 * f
        return [(cx - s + r, sy), (cx + s - r, sy), (cx + s, sy + 1.4 * r), (cx + s * 0.92, sy + 0.12 * f),
                (cx + h, bottom), (cx - h, bottom), (cx - s * 0.92, sy + 0.12 * f), (cx - s, sy + 1.4 * r)]

    def arm_length(self) -> float:
        return self.hip_y + 0.07 * self.fig - self.shoulder_y

    def arms(self) -> List[Tuple[Point, Point, Point]]:
        """(shoulder, elbow, hand) per arm. Front/back: image-left then image-right. Side: far arm then near arm."""
        f, length = self.fig, self.arm_length()
        if self.side:
            joint = (self.cx - 0.1 * self.shoulders, self.shoulder_y + 0.6 * self.arm_w)
            result = []
            for swing in (self.stride, -self.stride):  # arms swing against the legs
                angle = 0.42 * swing
                elbow = (joint[0] + math.sin(angle) * length * 0.5, joint[1] + math.cos(angle) * length * 0.5)
                fore = angle + 0.25  # forearms bend slightly forward
                hand = (elbow[0] + math.sin(fore) * length * 0.5, elbow[1] + math.cos(fore) * length * 0.48)
                result.append((joint, elbow, hand))
            return result
        result = []
        for sign in (-1.0, 1.0):
            sx = self.cx + sign * (self.shoulders - 0.5 * self.arm_w)
            lift = abs(self.stride) * 0.02 * f * (1.0 if sign * self.stride > 0 else 0.3)
            joint = (sx, self.shoulder_y + 0.6 * self.arm_w)
            elbow = (sx + sign * 0.012 * f, joint[1] + length * 0.48)
            hand = (sx + sign * 0.006 * f, joint[1] + length - lift)
            result.append((joint, elbow, hand))
        return result

    def legs(self) -> List[Tuple[Point, Point]]:
        """(hip joint, ankle) per leg, in the same order as ``arms``."""
        length = self.feet - self.hip_y - 0.5 * self.shoe_h
        if self.side:
            result = []
            for swing in (-self.stride, self.stride):  # far leg first
                angle = 0.36 * swing
                hip = (self.cx, self.hip_y)
                result.append((hip, (self.cx + math.sin(angle) * length, self.hip_y + math.cos(angle) * length)))
            return result
        result = []
        for sign in (-1.0, 1.0):
            x = self.cx + sign * (self.hips - 0.5 * self.leg_w)
            lift = max(0.0, sign * self.stride) * 0.025 * self.fig  # the forward foot looks a little higher
            result.append(((x, self.hip_y), (x + sign * 0.004 * self.fig, self.hip_y + length - lift)))
        return result


def build_geometry(body: Body, cx: float, feet: float, fig: float, side: bool, stride: float) -> Geometry:
    """Lay out a body of height ``fig`` pixels standing on ``feet`` at horizontal position ``cx``."""
    fig = fig * body.height
    top = feet - fig
    head_h = body.head * fig
    shoulder_y = top + head_h + 0.03 * fig
    return Geometry(
        cx=cx,
        top=top,
        feet=feet,
        fig=fig,
        side=side,
        stride=stride,
        head_h=head_h,
        head_w=head_h * (0.84 if side else 0.76),
        shoulder_y=shoulder_y,
        hip_y=feet - body.legs * fig,
        shoulders=(0.075 * fig * body.build) if side else body.shoulders * fig / 2,
        hips=(0.07 * fig * body.build) if side else body.hips * fig / 2,
        arm_w=0.05 * fig * body.build,
        leg_w=0.072 * fig * body.build,
        shoe_h=0.035 * fig,
    )
