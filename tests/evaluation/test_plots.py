"""Plots write non-empty PNG files from tiny generated images."""

import numpy as np
import pytest
from PIL import Image

from compressreid.errors import DataError
from compressreid.evaluation import distance_distributions, roc_from_distmat
from compressreid.evaluation.plots import plot_distance_distributions, plot_roc, plot_worst_queries

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def problem(tmp_path):
    rng = np.random.default_rng(0)
    num_q, num_g = 6, 30
    q_pids, g_pids = rng.integers(0, 4, num_q), rng.integers(0, 4, num_g)
    q_cams, g_cams = rng.integers(0, 2, num_q), rng.integers(0, 2, num_g)
    dist = rng.random((num_q, num_g)) + 0.5 * (q_pids[:, None] != g_pids[None, :])
    paths = []
    for i in range(num_q + num_g):
        path = tmp_path / f"img{i}.png"
        Image.fromarray(rng.integers(0, 255, (16, 8, 3), dtype=np.uint8)).save(path)
        paths.append(str(path))
    return dist, (q_pids, g_pids, q_cams, g_cams), paths[:num_q], paths[num_q:]


def assert_png(path):
    with open(path, "rb") as f:
        data = f.read()
    assert data.startswith(PNG_MAGIC) and len(data) > 1000


def test_plot_roc_overlays_models(problem, tmp_path):
    dist, labels, _, _ = problem
    rocs = {"teacher": roc_from_distmat(dist, *labels), "student": roc_from_distmat(dist * 1.3 + 0.1, *labels)}
    out = plot_roc(rocs, str(tmp_path / "plots" / "roc.png"))
    assert out == str(tmp_path / "plots" / "roc.png")
    assert_png(out)


def test_plot_distance_distributions(problem, tmp_path):
    dist, labels, _, _ = problem
    data = {"teacher": distance_distributions(dist, *labels), "int8": distance_distributions(dist + 0.05, *labels)}
    assert_png(plot_distance_distributions(data, str(tmp_path / "dist.png")))


def test_plot_worst_queries(problem, tmp_path):
    dist, labels, q_paths, g_paths = problem
    out = plot_worst_queries(q_paths, g_paths, dist, *labels, str(tmp_path / "worst.png"), num_queries=3, topk=4)
    assert_png(out)
    with pytest.raises(DataError, match="paths"):
        plot_worst_queries(q_paths[:-1], g_paths, dist, *labels, str(tmp_path / "bad.png"))
