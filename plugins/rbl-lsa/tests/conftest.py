"""Fixtures for every test of this plugin."""

import pytest
import torch


@pytest.fixture(autouse=True)
def _seeded_single_threaded_torch():
    """A fixed seed, and one torch thread: the tests' tensors are tiny, and on a shared machine the
    spinning of a second OpenMP thread made each operation up to 40 times slower."""
    torch.manual_seed(0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
