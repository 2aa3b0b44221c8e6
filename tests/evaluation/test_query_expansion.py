"""Alpha-weighted query expansion: shapes, types, untouched inputs, and a loop reference of fast-reid's aqe."""

import numpy as np
import pytest
import torch

from compressreid.errors import DataError
from compressreid.evaluation import aqe


def reference_aqe(q, g, qe_times, qe_k, alpha):
    feats = np.concatenate([q, g]).astype(np.float64)
    for _ in range(qe_times):
        normed = feats / np.linalg.norm(feats, axis=1, keepdims=True)
        new = []
        for i in range(len(feats)):
            sims = normed @ normed[i]
            nearest = np.argsort(-sims, kind="stable")[:qe_k]  # includes the feature itself
            new.append(np.mean(feats[nearest] * sims[nearest, None] ** alpha, axis=0))
        feats = np.stack(new)
    return feats[: len(q)], feats[len(q) :]


@pytest.fixture
def feats():
    rng = np.random.default_rng(0)
    return rng.standard_normal((7, 12)).astype(np.float32), rng.standard_normal((25, 12)).astype(np.float32)


@pytest.mark.parametrize("qe_times, qe_k, alpha", [(1, 5, 3.0), (2, 3, 1.0), (1, 100, 3.0)])
def test_matches_reference(feats, qe_times, qe_k, alpha):
    q, g = feats
    new_q, new_g = aqe(q, g, qe_times=qe_times, qe_k=qe_k, alpha=alpha, chunk_size=4)
    ref_q, ref_g = reference_aqe(q, g, qe_times, min(qe_k, 32), alpha)
    assert isinstance(new_q, np.ndarray) and new_q.shape == q.shape and new_g.shape == g.shape
    np.testing.assert_allclose(new_q, ref_q, atol=1e-5)
    np.testing.assert_allclose(new_g, ref_g, atol=1e-5)


def test_torch_in_torch_out_and_inputs_untouched(feats):
    q, g = (torch.from_numpy(a.copy()) for a in feats)
    q0, g0 = q.clone(), g.clone()
    new_q, new_g = aqe(q, g)
    assert isinstance(new_q, torch.Tensor) and new_q.shape == q.shape and new_g.shape == g.shape
    assert torch.equal(q, q0) and torch.equal(g, g0)


def test_zero_rounds_is_identity(feats):
    q, g = feats
    new_q, new_g = aqe(q, g, qe_times=0)
    np.testing.assert_array_equal(new_q, q)
    np.testing.assert_array_equal(new_g, g)


def test_bad_inputs(feats):
    q, g = feats
    with pytest.raises(DataError, match="dims differ"):
        aqe(q, g[:, :3])
    with pytest.raises(ValueError, match="qe_k"):
        aqe(q, g, qe_k=0)
