"""Dense distances against scipy's cdist, with inputs left untouched."""

import numpy as np
import pytest
import torch
from scipy.spatial.distance import cdist

from compressreid.errors import DataError
from compressreid.evaluation import compute_distance


@pytest.fixture
def feats():
    rng = np.random.default_rng(0)
    return rng.standard_normal((13, 8)).astype(np.float32), rng.standard_normal((21, 8)).astype(np.float32)


@pytest.mark.parametrize("metric, scipy_metric", [("cosine", "cosine"), ("euclidean", "euclidean")])
def test_matches_scipy(feats, metric, scipy_metric):
    q, g = feats
    out = compute_distance(q, g, metric, chunk_size=4)  # several chunks
    assert out.shape == (13, 21) and out.dtype == np.float32
    np.testing.assert_allclose(out, cdist(q.astype(np.float64), g.astype(np.float64), scipy_metric), atol=1e-5)


def test_torch_inputs_are_not_modified(feats):
    q, g = (torch.from_numpy(a.copy()) for a in feats)
    q0, g0 = q.clone(), g.clone()
    np.testing.assert_allclose(compute_distance(q, g), compute_distance(*feats), atol=1e-6)
    compute_distance(q, g, "euclidean")
    assert torch.equal(q, q0) and torch.equal(g, g0)


def test_self_distance_is_zero(feats):
    q, _ = feats
    assert np.abs(np.diag(compute_distance(q, q, "euclidean"))).max() < 1e-3
    assert np.abs(np.diag(compute_distance(q, q, "cosine"))).max() < 1e-6


def test_bad_inputs(feats):
    q, g = feats
    with pytest.raises(DataError, match="dims differ"):
        compute_distance(q, g[:, :4])
    with pytest.raises(DataError, match="empty"):
        compute_distance(q[:0], g)
    with pytest.raises(DataError, match="2-D"):
        compute_distance(q[0], g)
    bad = q.copy()
    bad[0, 0] = np.nan
    with pytest.raises(DataError, match="NaN"):
        compute_distance(bad, g)
    with pytest.raises(ValueError, match="unknown metric"):
        compute_distance(q, g, "manhattan")
