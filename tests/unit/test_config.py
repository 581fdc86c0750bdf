"""Settings that would break a guarantee are refused."""

import pytest

from orchestrator.config import orchestrator_config


def test_defaults_run_locally() -> None:
    config = orchestrator_config()
    assert config["SERVICE_URLS"]["b"].endswith(":5002")
    assert (config["CALL_TIMEOUT"], config["CALL_RETRIES"]) == (5.0, 2)


def test_lease_must_outlast_one_attempt_and_backoff() -> None:
    with pytest.raises(ValueError, match="LEASE_SECONDS"):
        orchestrator_config({"CALL_TIMEOUT": 10.0, "LEASE_SECONDS": 15.0})


def test_timeout_must_be_positive() -> None:
    with pytest.raises(ValueError, match="CALL_TIMEOUT"):
        orchestrator_config({"CALL_TIMEOUT": 0.0})
