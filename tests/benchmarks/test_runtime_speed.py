"""benchmarks/runtime_speed.py builds the config's own student unless told another width."""

from __future__ import annotations

import os

from compressreid.config import load_config

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_the_student_is_the_configs_unless_another_width_is_asked(import_benchmark):
    runtime_speed = import_benchmark("runtime_speed")
    osnet = load_config(os.path.join(REPO, "configs", "synthetic", "student_osnet_x0_25.yml"), [])
    assert runtime_speed.student_opts(osnet, 0.0) == ["MODEL.BACKBONE.WIDTH", "0.25"]  # was 1.0: OSNet x1.0
