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


@pytest.fixture
def postgres_url():
    """The test PostgreSQL's URL (FUNNELBENCH_TEST_POSTGRES_URL). Without it the test is skipped
    locally, but fails where FUNNELBENCH_REQUIRE_POSTGRES is set (CI sets it): a CI run never
    passes by skipping it."""
    url = os.environ.get("FUNNELBENCH_TEST_POSTGRES_URL")
    if not url:
        if os.environ.get("FUNNELBENCH_REQUIRE_POSTGRES"):
            pytest.fail(
                "FUNNELBENCH_REQUIRE_POSTGRES is set but FUNNELBENCH_TEST_POSTGRES_URL is not: "
                "PostgreSQL did not start (see .ci/postgres.sh)"
            )
        pytest.skip("no PostgreSQL: set FUNNELBENCH_TEST_POSTGRES_URL (.ci/postgres.sh prints one)")
    return url
