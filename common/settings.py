"""Where every process reads its settings: the environment, over the values in `.env`."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from dotenv import dotenv_values

from common.faults import MAX_LAB_DELAY
from common.status import Isolation


def environment(dotenv: str | Path = ".env") -> dict[str, str]:
    """The process environment over `.env` (when there is one): a variable set in both
    takes the environment's value, as with docker compose."""
    from_file = dotenv_values(dotenv) if Path(dotenv).is_file() else {}
    return {**{k: v for k, v in from_file.items() if v is not None}, **os.environ}


def flag(env: Mapping[str, str], name: str, default: bool) -> bool:
    """A 0/1 (or false/true) setting; ValueError for anything else."""
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    if raw.lower() in ("1", "true", "yes", "on"):
        return True
    if raw.lower() in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"{name} must be 0 or 1, not {raw!r}")


MIN_SECRET_LENGTH = 16
# Loopback, and the names the processes have on compose's network (host names take no "_").
DEFAULT_HOSTS = "127.0.0.1,localhost,orchestrator,service-a,service-b,service-c"
DEFAULT_ORIGINS = "http://127.0.0.1:5000,http://localhost:5000"  # the dashboard, as make run serves it
EXAMPLE_PASSWORD = "change-me"  # .env.example's stand-in for every secret


def _names(env: Mapping[str, str], name: str, default: str) -> tuple[str, ...]:
    """A comma-separated list setting."""
    return tuple(part.strip() for part in env.get(name, default).split(",") if part.strip())


def gunicorn_threads(env: Mapping[str, str]) -> int:
    """The threads gunicorn serves each process's requests on (GUNICORN_THREADS, 32)."""
    return int(env.get("GUNICORN_THREADS", "32"))


def shared_settings(env: Mapping[str, str]) -> dict[str, Any]:
    """The settings all four processes read the same way (`check_shared` checks them)."""
    log_format = env.get("LOG_FORMAT", "text")
    if log_format not in ("text", "json"):
        raise ValueError(f"LOG_FORMAT must be text or json, not {log_format!r}")
    return {
        "SERVICE_SECRET": env.get("SERVICE_SECRET", ""),
        # The host names this system is served under (any other Host header is 400: a DNS
        # rebinding page reaches the process under its own name), and the origins whose pages
        # may write to it (the dashboard's).
        "ALLOWED_HOSTS": _names(env, "ALLOWED_HOSTS", DEFAULT_HOSTS),
        "ALLOWED_ORIGINS": _names(env, "ALLOWED_ORIGINS", DEFAULT_ORIGINS),
        "FAULTS_ENABLED": flag(env, "FAULTS_ENABLED", False),
        "DB_POOL_SIZE": int(env.get("DB_POOL_SIZE", "40")),
        "DB_TIMEOUT": float(env.get("DB_TIMEOUT", "2")),
        "MAX_CONTENT_LENGTH": int(env.get("MAX_BODY_BYTES", str(64 * 1024))),
        "LOG_LEVEL": env.get("LOG_LEVEL", "INFO"),
        "LOG_JSON": log_format == "json",
    }


def retry_settings(env: Mapping[str, str]) -> dict[str, Any]:
    """How often a step (orchestrator) or an event's handler (choreography) is tried, and the
    pauses in between: one policy for both models."""
    return {
        "CALL_RETRIES": int(env.get("CALL_RETRIES", "2")),
        "COMPENSATION_RETRIES": int(env.get("COMPENSATION_RETRIES", "5")),
        "RETRY_BACKOFF": float(env.get("RETRY_BACKOFF", "0.2")),
        "RETRY_BACKOFF_MAX": float(env.get("RETRY_BACKOFF_MAX", "2")),
        "RETRY_JITTER": float(env.get("RETRY_JITTER", "0.1")),
    }


def isolation_settings(env: Mapping[str, str]) -> dict[str, Any]:
    """What sagas do about isolation (docs/isolation.md): the default for a saga that names none,
    how long a saga waits for another's semantic lock, when a lock held so long needs a person,
    and the isolation lab's delay."""
    isolation = env.get("ISOLATION", Isolation.NONE.value)
    if isolation not in Isolation.__members__.values():
        raise ValueError(f"ISOLATION must be {' or '.join(i.value for i in Isolation)}, not {isolation!r}")
    return {
        "ISOLATION": Isolation(isolation),
        "LOCK_WAIT": float(env.get("LOCK_WAIT", "30")),
        "LOCK_ATTENTION_AFTER": float(env.get("LOCK_ATTENTION_AFTER", "120")),
        "LAB_DELAY": min(MAX_LAB_DELAY, float(env.get("LAB_DELAY", "1.5"))),
    }


def choreography_settings(env: Mapping[str, str]) -> dict[str, Any]:
    """The choreographed saga's settings, read by the participants and the observer alike."""
    deadline = float(env.get("CHOREOGRAPHY_DEADLINE", "15"))
    return {
        "CHOREOGRAPHY_DEADLINE": deadline,
        # A saga still open this long after its deadline is stuck: nudged by A, flagged by /consistency.
        "CHOREOGRAPHY_STUCK_AFTER": float(env.get("CHOREOGRAPHY_STUCK_AFTER", str(4 * deadline))),
        "BROKER_URL": env.get("BROKER_URL") or None,  # unset: the embedded transport (HTTP)
        "BROKER_NAMESPACE": env.get("BROKER_NAMESPACE", "saga"),  # prefix of exchanges and queues
        "OBSERVER_URL": env.get("OBSERVER_URL", "http://127.0.0.1:5000"),
        "RELAY_MAX_ATTEMPTS": int(env.get("RELAY_MAX_ATTEMPTS", "50")),
        "CHOREOGRAPHY_POLL": float(env.get("CHOREOGRAPHY_POLL", "0.5")),
        # Seconds after its commit an event is left to the relay or the inbox worker it was handed
        # to in memory, before a scan of the table takes it (the process died first, say).
        "CHOREOGRAPHY_HANDOVER": max(1.0, 4 * float(env.get("CHOREOGRAPHY_POLL", "0.5"))),
    }


def check_shared(config: Mapping[str, Any]) -> None:
    """Refuse to start without what every process needs."""
    if len(config["SERVICE_SECRET"]) < MIN_SECRET_LENGTH:
        raise ValueError(f"SERVICE_SECRET must be set, at least {MIN_SECRET_LENGTH} characters: every "
                         "call between services is signed with it (`make run` makes one for its run)")
    for key in ("DATABASE_URL", "BROKER_URL"):
        if config.get(key) and urlsplit(config[key]).password == EXAMPLE_PASSWORD:
            raise ValueError(f"{key} holds .env.example's password {EXAMPLE_PASSWORD!r}: set a secret of "
                             "your own (make up writes .env with fresh ones)")
    if not 0 < config["DB_TIMEOUT"] <= 60:
        raise ValueError("DB_TIMEOUT must be more than 0 and at most 60 seconds")
    if not (config["LOCK_WAIT"] > 0 and config["LOCK_ATTENTION_AFTER"] > 0 and config["LAB_DELAY"] >= 0):
        raise ValueError("LOCK_WAIT and LOCK_ATTENTION_AFTER must be more than 0, LAB_DELAY at least 0")
