"""benchmarks/int8_paired_map.py's paired Rank-1 and the per-query scores it reads (benchmarks/_bench.py); the student
runtime_speed.py builds by default."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture(scope="module")
def bench():
    with pytest.MonkeyPatch.context() as patch:
        patch.syspath_prepend(os.path.join(REPO, "benchmarks"))
        import _bench
        import int8_paired_map
    return _bench, int8_paired_map


def test_paired_hits_count_the_queries_lost_and_gained(bench):
    _, paired = bench
    hit = np.array([100.0, 0.0, 100.0, np.nan, 0.0, 100.0])
    reference = np.array([100.0, 100.0, 0.0, 100.0, 100.0, np.nan])  # 4 queries scored by both
    mean, stderr, lost, gained = paired.paired_hits(hit, reference)
    assert (lost, gained) == (2, 1)
    assert mean == pytest.approx(-25.0)  # (0 - 100 + 100 - 100) / 4
    assert stderr == pytest.approx(np.std([0, -100, 100, -100], ddof=1) / 2)


class _Record:
    def __init__(self, pid, camid):
        self.pid, self.camid = pid, camid


class _Images:
    def __init__(self, q, g):
        self.q_records = [_Record(*r) for r in q]
        self.g_records = [_Record(*r) for r in g]


def test_per_query_scores_mark_rank1_hits_and_skip_queries_without_a_match(bench):
    _bench, _ = bench
    images = _Images(q=[(1, 0), (2, 0), (3, 0)], g=[(1, 1), (2, 1), (4, 1)])  # identity 3 has no gallery match
    g = torch.eye(3)
    q = torch.stack([g[0], 0.9 * g[2] + 0.1 * g[1], g[1]])  # query 1's nearest is identity 4: a miss at rank 1
    ap, hit = _bench.per_query_scores(q, g, images, "cosine")
    assert hit[0] == 100.0 and hit[1] == 0.0 and np.isnan(hit[2])
    assert ap[0] == 100.0 and ap[1] == pytest.approx(50.0) and np.isnan(ap[2])
    assert np.array_equal(_bench.per_query_ap(q, g, images, "cosine"), ap, equal_nan=True)


def test_runtime_speed_builds_the_configs_student_unless_told_otherwise():
    """runtime_speed.py's defaults: the config's width and embedding size (MobileNetV3-small's FEAT_DIM is 576,
    not 512 x width); another width scales the config's FEAT_DIM with it; --feat-dim wins."""
    from compressreid.config import load_config

    with pytest.MonkeyPatch.context() as patch:
        patch.syspath_prepend(os.path.join(REPO, "benchmarks"))
        import runtime_speed
    configs = os.path.join(REPO, "configs", "synthetic")
    mnv3 = load_config(os.path.join(configs, "student_mobilenetv3_small.yml"), [])
    osnet = load_config(os.path.join(configs, "student_osnet_x0_25.yml"), [])
    assert runtime_speed.student_opts(mnv3, 0.0, 0) == ["MODEL.BACKBONE.WIDTH", "1.0", "MODEL.BACKBONE.FEAT_DIM", "576"]
    assert runtime_speed.student_opts(osnet, 0.0, 0)[1::2] == ["0.25", "128"]
    assert runtime_speed.student_opts(osnet, 1.0, 0)[1::2] == ["1.0", "512"]
    assert runtime_speed.student_opts(osnet, 1.0, 256)[1::2] == ["1.0", "256"]
