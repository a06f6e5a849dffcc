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
