"""The orchestrator's settings: environment variables with defaults for a local run."""

from __future__ import annotations

import re
import socket
from collections.abc import Mapping
from typing import Any

from common.declaration import Definitions, load
from common.settings import (
    check_shared,
    choreography_settings,
    environment,
    flag,
    gunicorn_threads,
    isolation_settings,
    retry_settings,
    shared_settings,
)


def orchestrator_config(overrides: dict[str, Any] | None = None,
                        env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Settings from `env` (the environment over `.env` unless given); `overrides` (from tests) win."""
    env = environment() if env is None else env
    declaration = load(env)  # the saga, declared once (sagas/signup.py unless SAGA_DECLARATION)
    config: dict[str, Any] = {
        **shared_settings(env),
        "DATABASE_URL": env.get("ORCHESTRATOR_DATABASE_URL", "sqlite:///var/orchestrator.db"),
        "DECLARATION": declaration,
        "DEFINITIONS": declaration.registry(env),
        "SERVICE_URLS": declaration.urls(env),
        "CALL_TIMEOUT": float(env.get("CALL_TIMEOUT", "5")),
        **retry_settings(env),
        **choreography_settings(env),
        **isolation_settings(env),
        "LEASE_SECONDS": float(env.get("LEASE_SECONDS", "30")),
        "RECOVERY_INTERVAL": float(env.get("RECOVERY_INTERVAL", "2")),
        "RECOVERY_ENABLED": flag(env, "RECOVERY_ENABLED", True),
        "COMPENSATION_RETRY_AFTER": float(env.get("COMPENSATION_RETRY_AFTER", "30")),
        "COMPENSATION_RETRY_ROUNDS": int(env.get("COMPENSATION_RETRY_ROUNDS", "10")),
        "FAILPOINTS_FILE": env.get("FAILPOINTS_FILE") or None,  # the fault suite's crash points
        "ORCHESTRATOR_ID": env.get("ORCHESTRATOR_ID", socket.gethostname()[:40]),
        "WORKER_THREADS": int(env.get("ORCHESTRATOR_WORKER_THREADS", "16")),
        # Sagas waiting for a worker thread (Prefer: respond-async, recovery): beyond it, 503.
        "ASYNC_QUEUE_LIMIT": int(env.get("ASYNC_QUEUE_LIMIT", "256")),
        # Readers waiting at once on GET /choreography/sagas/<id>?wait= (each holds one of the
        # process's threads, which the events they wait for need too): half the threads.
        "WAIT_SLOTS": int(env.get("WAIT_SLOTS", str(max(1, gunicorn_threads(env) // 2)))),
    }
    config.update(overrides or {})
    check(config)
    return config


def check(config: dict[str, Any]) -> None:
    """Refuse settings that would break a guarantee, with the reason."""
    check_shared(config)
    definitions: Definitions = config["DEFINITIONS"]
    timeouts = [config["CALL_TIMEOUT"], *(step.timeout for d in definitions for step in d.steps
                                          if step.timeout is not None)]
    if not all(0 < timeout <= 60 for timeout in timeouts):  # participants accept up to 60 s
        raise ValueError("CALL_TIMEOUT (and every step's timeout) must be more than 0 and at most 60 seconds")
    if not re.fullmatch(r"[A-Za-z0-9_.-]{1,40}", config["ORCHESTRATOR_ID"]):
        raise ValueError("ORCHESTRATOR_ID must be 1 to 40 letters, digits or _.-")
    if config["WAIT_SLOTS"] < 1:
        raise ValueError("WAIT_SLOTS must be at least 1")
    if config["CALL_RETRIES"] < 0 or config["COMPENSATION_RETRIES"] < 0:
        raise ValueError("the retry counts must be >= 0")
    if min(config["RETRY_BACKOFF"], config["RETRY_BACKOFF_MAX"], config["RETRY_JITTER"]) < 0:
        raise ValueError("RETRY_BACKOFF, RETRY_BACKOFF_MAX and RETRY_JITTER must be >= 0")
    # A driver renews its lease at every attempt, so one attempt plus one backoff must
    # fit in a lease with room to spare, or a second orchestrator could take a live saga.
    longest_gap = max(timeouts) + config["RETRY_BACKOFF_MAX"] + config["RETRY_JITTER"]
    if config["LEASE_SECONDS"] < 2 * longest_gap:
        raise ValueError(f"LEASE_SECONDS must be at least 2 x (the longest step timeout + "
                         f"RETRY_BACKOFF_MAX + RETRY_JITTER) = {2 * longest_gap:g}")
