"""Service A: stores the `username` of a sign-up in `table_a.username`."""

from typing import Any

from flask import Flask

from participant.app import create_participant_app
from participant.spec import ServiceSpec

SPEC = ServiceSpec(name="a", table="table_a", column="username", field="username", port=5001)


def create_app(overrides: dict[str, Any] | None = None) -> Flask:
    """Service A's app."""
    return create_participant_app(SPEC, overrides)
