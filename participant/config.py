"""A participant's settings: environment variables with defaults for a local run."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from common.settings import environment
from participant.spec import ServiceSpec


def participant_config(spec: ServiceSpec, overrides: dict[str, Any] | None = None,
                       env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Settings from `env` (the environment over `.env` unless given); `overrides` win."""
    env = environment() if env is None else env
    config: dict[str, Any] = {
        "DATABASE_URL": env.get(spec.env_prefix + "DATABASE_URL", f"sqlite:///var/service_{spec.name}.db"),
        "DB_POOL_SIZE": int(env.get("DB_POOL_SIZE", "40")),
        "FAULT_LATE_MARGIN": float(env.get("FAULT_LATE_MARGIN", "0.5")),
        "MAX_CONTENT_LENGTH": int(env.get("MAX_BODY_BYTES", str(64 * 1024))),
        "LOG_LEVEL": env.get("LOG_LEVEL", "INFO"),
    }
    config.update(overrides or {})
    return config
