"""A contact sheet of rendered identities across cameras and views, for eyeballing the renderer and the README."""

from __future__ import annotations

import os
from typing import List

import numpy as np
from PIL import Image

from compressreid.data.synthetic.params import SyntheticParams
from compressreid.data.synthetic.plan import IdentityPlan, build_plan, image_rng
from compressreid.data.synthetic.render import render_pedestrian

# Image indices far above any real one, so sheet images never coincide with benchmark images.
_SHEET_INDEX_OFFSET = 1_000_000
_COLUMN_VIEWS = ("front", "back", "right", "left", "front", "back")


def _pick_rows(plans: List[IdentityPlan], count: int, black_rows: int) -> List[IdentityPlan]:
    train = [plan for plan in plans if plan.split == "train"]
    black = [plan for plan in train if plan.traits.black_clothes][:black_rows]
    other = [plan for plan in train if not plan.traits.black_clothes][: count - len(black)]
    return other + black


def contact_sheet(path: str, params: SyntheticParams = SyntheticParams(), num_identities: int = 8,
                  num_views: int = 6, black_rows: int = 2, zoom: int = 2) -> str:
    """Save a PNG grid: one row per training identity, one column per (camera, view).

    Rows with near-black clothes come last and are marked by a red bar at the left edge.

    Args:
        path: where to write the PNG.
        params: benchmark parameters (seed, cameras, image size, black-clothes flags).
        num_identities: rows.
        num_views: columns; column k uses camera ``k % num_cameras + 1`` and a cycling view.
        black_rows: how many of the rows show black-clothes identities (if the split has that many).
        zoom: nearest-neighbour upscaling factor for viewing.

    Returns:
        ``path``.
    """
    cameras, plans = build_plan(params)
    rows = []
    for plan in _pick_rows(plans, num_identities, black_rows):
        tiles = []
        for column in range(num_views):
            camera = cameras[column % len(cameras)]
            view = _COLUMN_VIEWS[column % len(_COLUMN_VIEWS)]
            rng = image_rng(params.seed, plan.identity, _SHEET_INDEX_OFFSET + column)
            tiles.append(np.asarray(render_pedestrian(plan.traits, camera, view, rng, params.height, params.width)))
        row = np.concatenate(tiles, axis=1)
        bar = np.zeros((row.shape[0], 3, 3), dtype=np.uint8)
        bar[..., 0] = 220 if plan.traits.black_clothes else 255
        bar[..., 1:] = 0 if plan.traits.black_clothes else 255
        rows.append(np.concatenate([bar, row], axis=1))
    sheet = Image.fromarray(np.concatenate(rows, axis=0), "RGB")
    sheet = sheet.resize((sheet.width * zoom, sheet.height * zoom), Image.Resampling.NEAREST)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    sheet.save(path)
    return path
