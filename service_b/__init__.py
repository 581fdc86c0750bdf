"""Service B: stores the `address` of a sign-up in `table_b.address`."""

from typing import Any

from flask import Flask

from participant.app import create_participant_app
from participant.spec import ServiceSpec

SPEC = ServiceSpec(name="b", table="table_b", column="address", field="address", port=5002)


def create_app(overrides: dict[str, Any] | None = None) -> Flask:
    """Service B's app."""
    return create_participant_app(SPEC, overrides)
