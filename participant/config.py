"""A participant's settings: environment variables with defaults for a local run."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from common.declaration import Service, load
from common.settings import (
    check_shared,
    choreography_settings,
    environment,
    isolation_settings,
    retry_settings,
    shared_settings,
)


def participant_config(name: str, overrides: dict[str, Any] | None = None,
                       env: Mapping[str, str] | None = None) -> tuple[Service, dict[str, Any]]:
    """Participant `name` as the saga's declaration has it, and its settings from `env` (the
    environment over `.env` unless given); `overrides` win."""
    env = environment() if env is None else env
    declaration = load(env)  # the saga, declared once (sagas/signup.py unless SAGA_DECLARATION)
    spec = declaration.service(name)
    config: dict[str, Any] = {
        **shared_settings(env),
        **retry_settings(env),
        **choreography_settings(env),
        **isolation_settings(env),
        "DECLARATION": declaration,
        "DEFINITIONS": declaration.registry(env),
        # Where this service's events go over the embedded transport: the other services.
        "PEER_URLS": declaration.urls(env),
        "INBOX_THREADS": int(env.get("INBOX_THREADS", "16")),
        "DATABASE_URL": env.get(spec.env_prefix + "DATABASE_URL", f"sqlite:///var/service_{spec.name}.db"),
        "FAULT_LATE_MARGIN": float(env.get("FAULT_LATE_MARGIN", "0.5")),
        # Injected sleeps (delay, timeout) running at once; more are refused with 503, so
        # that faults can never take every thread from real work.
        "FAULT_SLEEP_SLOTS": int(env.get("FAULT_SLEEP_SLOTS", "8")),
    }
    config.update(overrides or {})
    check_shared(config)
    if config["FAULT_SLEEP_SLOTS"] < 1:
        raise ValueError("FAULT_SLEEP_SLOTS must be at least 1")
    return spec, config
