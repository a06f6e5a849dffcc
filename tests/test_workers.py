"""Many workers on one study: PostgreSQL (CI starts a real server, .ci/run) and the journal file.

Tests that need PostgreSQL read its URL from FUNNELBENCH_TEST_POSTGRES_URL. Without it they are
skipped locally, but fail where FUNNELBENCH_REQUIRE_POSTGRES is set (CI sets it): a CI run never
passes by skipping them."""

import os
import uuid

import optuna
import pytest


@pytest.fixture
def postgres_url():
    url = os.environ.get("FUNNELBENCH_TEST_POSTGRES_URL")
    if not url:
        if os.environ.get("FUNNELBENCH_REQUIRE_POSTGRES"):
            pytest.fail("FUNNELBENCH_REQUIRE_POSTGRES is set but FUNNELBENCH_TEST_POSTGRES_URL is not: "
                        "PostgreSQL did not start (see .ci/postgres.sh)")
        pytest.skip("no PostgreSQL: set FUNNELBENCH_TEST_POSTGRES_URL (.ci/postgres.sh prints one)")
    return url


def _study_name(prefix):
    """A fresh study name: tests share one database, never one study."""
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def test_postgres_storage_round_trip(postgres_url):
    """The driver the postgres extra declares is the one Optuna's SQLAlchemy loads for postgresql://."""
    name = _study_name("roundtrip")
    study = optuna.create_study(study_name=name, storage=postgres_url)
    study.set_user_attr("funnelbench", "search/1")
    study.tell(study.ask({"x": optuna.distributions.IntDistribution(0, 3)}), 1.0)
    again = optuna.load_study(study_name=name, storage=postgres_url)
    assert again.user_attrs["funnelbench"] == "search/1"
    assert [t.state for t in again.trials] == [optuna.trial.TrialState.COMPLETE]
    optuna.delete_study(study_name=name, storage=postgres_url)
