"""The Flask set-up every process shares: settings, logging, JSON answers and errors."""

from __future__ import annotations

from typing import Any

from flask import Flask, jsonify
from sqlalchemy import Engine

from common.db import ping
from common.errors import register_error_handlers
from common.logs import configure_logging


def base_app(name: str, config: dict[str, Any], app_class: type[Flask] = Flask,
             **flask_options: Any) -> Flask:
    """A Flask app with `config`, one log format, unsorted JSON keys and JSON errors."""
    flask_options.setdefault("static_folder", None)  # only the dashboard serves files
    app = app_class(name, **flask_options)
    app.config.update(config)
    app.json.sort_keys = False  # type: ignore[attr-defined]  # answers read in the order written
    configure_logging(app.config["LOG_LEVEL"])
    register_error_handlers(app)
    return app


def database_health(engine: Engine, **identity: Any) -> tuple[Any, int]:
    """A /health answer: 200 when the database answers, 503 when it does not."""
    try:
        ping(engine)
    except Exception:  # noqa: BLE001 - any database failure means unhealthy
        return jsonify({**identity, "status": "unhealthy", "database": "unavailable"}), 503
    return jsonify({**identity, "status": "ok", "database": "ok"}), 200
