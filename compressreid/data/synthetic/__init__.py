"""Built-in synthetic ReID benchmark: procedurally rendered pedestrians written in the Market-1501 layout."""

from compressreid.data.synthetic.cameras import VIEWS, Camera, build_cameras
from compressreid.data.synthetic.contact import contact_sheet
from compressreid.data.synthetic.params import SyntheticParams, synthetic_folder_name
from compressreid.data.synthetic.render import render_pedestrian
from compressreid.data.synthetic.traits import Traits, sample_traits
from compressreid.data.synthetic.writer import load_identity_metadata, render_synthetic_benchmark

__all__ = [
    "VIEWS",
    "Camera",
    "SyntheticParams",
    "Traits",
    "build_cameras",
    "contact_sheet",
    "load_identity_metadata",
    "render_pedestrian",
    "render_synthetic_benchmark",
    "sample_traits",
    "synthetic_folder_name",
]
