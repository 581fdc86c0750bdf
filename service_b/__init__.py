"""Service B: its table, column, field and port are the saga declaration's (sagas/signup.py)."""

from typing import Any

from flask import Flask

from participant.app import create_participant_app

NAME = "b"


def create_app(overrides: dict[str, Any] | None = None) -> Flask:
    """Service B's app."""
    return create_participant_app(NAME, overrides)
