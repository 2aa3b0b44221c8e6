"""Suite-wide test settings."""

import pytest
import torch


@pytest.fixture(scope="session", autouse=True)
def one_thread():
    """One intra-op thread per test process: the models and batches are tiny, and several OpenMP threads per
    xdist worker oversubscribe the 2 cores CI runs on (tens of times slower). Tools run as subprocesses keep
    their own setting."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
