"""Settings: defaults that run locally, the environment read as given, and refusals that
keep a guarantee. Each test passes its own environment: none reads the caller's."""

from pathlib import Path

import pytest

from common.settings import environment
from orchestrator.config import orchestrator_config
from participant.config import participant_config

SECRET = {"SERVICE_SECRET": "s" * 32}


def test_defaults_run_locally() -> None:
    config = orchestrator_config(env=SECRET)
    assert config["SERVICE_URLS"] == {"a": "http://127.0.0.1:5001", "b": "http://127.0.0.1:5002",
                                      "c": "http://127.0.0.1:5003"}
    assert (config["CALL_TIMEOUT"], config["CALL_RETRIES"], config["RETRY_JITTER"]) == (5.0, 2, 0.1)
    assert config["DEFINITIONS"].default.key == "signup@1"
    assert config["DATABASE_URL"] == "sqlite:///var/orchestrator.db"
    assert participant_config("b", env=SECRET)[1]["DATABASE_URL"] == "sqlite:///var/service_b.db"


def test_the_environment_is_read() -> None:
    config = orchestrator_config(env={**SECRET, "CALL_RETRIES": "4", "SAGA_DEFINITION": "signup@2",
                                      "SERVICE_B_URL": "http://b:9"})
    assert config["CALL_RETRIES"] == 4
    assert config["DEFINITIONS"].default.key == "signup@2"
    assert config["SERVICE_URLS"]["b"] == "http://b:9"


def test_dotenv_lies_under_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    dotenv = tmp_path / ".env"
    dotenv.write_text("CALL_RETRIES=7\nLOG_LEVEL=DEBUG\n")
    monkeypatch.setenv("LOG_LEVEL", "WARNING")
    values = environment(dotenv)
    assert (values["CALL_RETRIES"], values["LOG_LEVEL"]) == ("7", "WARNING")


def test_lease_must_outlast_one_attempt_and_backoff() -> None:
    with pytest.raises(ValueError, match="LEASE_SECONDS"):
        orchestrator_config({"CALL_TIMEOUT": 10.0, "LEASE_SECONDS": 15.0}, env=SECRET)


@pytest.mark.parametrize("timeout", [0.0, 61.0])
def test_timeout_must_be_positive_and_at_most_a_minute(timeout: float) -> None:
    with pytest.raises(ValueError, match="CALL_TIMEOUT"):
        orchestrator_config({"CALL_TIMEOUT": timeout}, env=SECRET)


def test_half_the_threads_may_wait_on_a_saga() -> None:
    assert orchestrator_config(env=SECRET)["WAIT_SLOTS"] == 16
    assert orchestrator_config(env={**SECRET, "GUNICORN_THREADS": "4"})["WAIT_SLOTS"] == 2
    assert orchestrator_config(env={**SECRET, "GUNICORN_THREADS": "1"})["WAIT_SLOTS"] == 1
    with pytest.raises(ValueError, match="WAIT_SLOTS"):
        orchestrator_config(env={**SECRET, "WAIT_SLOTS": "0"})


def test_an_unknown_definition_is_refused() -> None:
    with pytest.raises(ValueError, match="signup@7"):
        orchestrator_config(env={**SECRET, "SAGA_DEFINITION": "signup@7"})


def test_a_bad_flag_is_refused() -> None:
    with pytest.raises(ValueError, match="RECOVERY_ENABLED"):
        orchestrator_config(env={**SECRET, "RECOVERY_ENABLED": "maybe"})


@pytest.mark.parametrize("secret", ["", "short"])
def test_every_process_refuses_to_start_without_a_secret(secret: str) -> None:
    with pytest.raises(ValueError, match="SERVICE_SECRET"):
        orchestrator_config(env={"SERVICE_SECRET": secret})
    with pytest.raises(ValueError, match="SERVICE_SECRET"):
        participant_config("b", env={"SERVICE_SECRET": secret})


def test_faults_are_off_unless_turned_on() -> None:
    assert orchestrator_config(env=SECRET)["FAULTS_ENABLED"] is False
    assert participant_config("b", env={**SECRET, "FAULTS_ENABLED": "1"})[1]["FAULTS_ENABLED"] is True


@pytest.mark.parametrize(("variable", "url"), [
    ("ORCHESTRATOR_DATABASE_URL", "mysql+pymysql://orchestrator:change-me@mysql:3306/orchestrator"),
    ("BROKER_URL", "amqp://saga-a:change-me@rabbitmq:5672/%2F"),
])
def test_the_examples_stand_in_password_is_refused(variable: str, url: str) -> None:
    """A .env copied from .env.example as it is, with compose: every process refuses to start."""
    with pytest.raises(ValueError, match="change-me"):
        orchestrator_config(env={**SECRET, variable: url})


def test_the_allowed_hosts_and_origins_are_lists() -> None:
    _, config = participant_config("b", env={**SECRET, "ALLOWED_HOSTS": "a.example, b.example",
                                             "ALLOWED_ORIGINS": "https://a.example"})
    assert (config["ALLOWED_HOSTS"], config["ALLOWED_ORIGINS"]) == (("a.example", "b.example"),
                                                                    ("https://a.example",))
    _, defaults = participant_config("b", env=SECRET)
    assert "service-b" in defaults["ALLOWED_HOSTS"] and "127.0.0.1" in defaults["ALLOWED_HOSTS"]
