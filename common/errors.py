"""One JSON error shape for every process: {"error": {"code", "message"}}, never a stack trace."""

from __future__ import annotations

import logging
from typing import Any

from flask import Flask, jsonify, request
from werkzeug.exceptions import HTTPException

log = logging.getLogger(__name__)


class ApiError(Exception):
    """An error answered to the client as JSON with its own status code."""

    def __init__(self, status: int, code: str, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.extra = extra


def error_response(status: int, code: str, message: str, **extra: Any) -> tuple[Any, int]:
    """The JSON body and status of an error answer."""
    return jsonify({"error": {"code": code, "message": message, **extra}}), status


def json_object() -> dict[str, Any]:
    """The request body as a JSON object, or a 400 that says what is wrong with it."""
    # force: curl sends -d bodies as form data by default; read them as JSON all the same.
    body = request.get_json(force=True, silent=True) if request.get_data(cache=True) else None
    if not isinstance(body, dict):
        raise ApiError(400, "invalid_json", "the request body must be a JSON object")
    return body


def register_error_handlers(app: Flask) -> None:
    """Answer every error, expected or not, as JSON; log unexpected ones with their trace."""

    @app.errorhandler(ApiError)
    def on_api_error(error: ApiError) -> tuple[Any, int]:
        return error_response(error.status, error.code, error.message, **error.extra)

    @app.errorhandler(HTTPException)
    def on_http_error(error: HTTPException) -> tuple[Any, int]:
        code = (error.name or "error").lower().replace(" ", "_")
        return error_response(error.code or 500, code, error.description or code)

    @app.errorhandler(Exception)
    def on_unexpected(error: Exception) -> tuple[Any, int]:
        log.exception("unhandled error on %s %s", request.method, request.path)
        return error_response(500, "internal_error", "internal error; see the server log")
