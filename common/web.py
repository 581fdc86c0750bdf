"""The Flask set-up every process shares: settings, logging, JSON answers and errors."""

from __future__ import annotations

from typing import Any

from flask import Flask

from common.errors import register_error_handlers
from common.logs import configure_logging


def base_app(name: str, config: dict[str, Any], **flask_options: Any) -> Flask:
    """A Flask app with `config`, one log format, unsorted JSON keys and JSON errors."""
    app = Flask(name, **flask_options)
    app.config.update(config)
    app.json.sort_keys = False  # type: ignore[attr-defined]  # answers read in the order written
    configure_logging(app.config["LOG_LEVEL"])
    register_error_handlers(app)
    return app
