"""Service C: stores the `payment` of a sign-up in `table_c.payment_method`."""

from typing import Any

from flask import Flask

from participant.app import create_participant_app
from participant.spec import ServiceSpec

SPEC = ServiceSpec(name="c", table="table_c", column="payment_method", field="payment", port=5003)


def create_app(overrides: dict[str, Any] | None = None) -> Flask:
    """Service C's app."""
    return create_participant_app(SPEC, overrides)
