"""A participant's settings: environment variables with defaults for a local run."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from common.settings import (
    check_shared,
    choreography_settings,
    environment,
    retry_settings,
    shared_settings,
)
from participant.spec import ServiceSpec


def participant_config(spec: ServiceSpec, overrides: dict[str, Any] | None = None,
                       env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Settings from `env` (the environment over `.env` unless given); `overrides` win."""
    env = environment() if env is None else env
    config: dict[str, Any] = {
        **shared_settings(env),
        **retry_settings(env),
        **choreography_settings(env),
        # Where this service's events go over the embedded transport: the other services.
        "PEER_URLS": {name: env.get(f"SERVICE_{name.upper()}_URL", f"http://127.0.0.1:{5001 + i}")
                      for i, name in enumerate(("a", "b", "c"))},
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
    return config
