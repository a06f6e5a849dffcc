"""Tests run on CPU with tiny presets. Under pytest-xdist each worker gets one thread so two
workers share the two cores instead of fighting over them."""

import os

import pytest
import torch

if os.environ.get("PYTEST_XDIST_WORKER"):
    torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(autouse=True)
def _no_results_in_repo(tmp_path, monkeypatch):
    """Commands that write results write them under a temporary folder, never into the repo."""
    monkeypatch.chdir(tmp_path)


@pytest.fixture
def one_thread():
    """One torch thread for the test: measurements stay fast when other work shares the cores
    (two OpenMP threads on two busy cores can be a hundred times slower)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
