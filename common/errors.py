"""One JSON error shape for every process: {"error": {"code", "message"}}, never a stack trace."""

from __future__ import annotations

import json
import logging
from typing import Any

from flask import Flask, jsonify, request
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from werkzeug.exceptions import HTTPException

log = logging.getLogger(__name__)

DATABASE_RETRY_AFTER = 5  # seconds: what a 503 for a database fault tells the caller to wait
DATABASE_ERRORS = (OperationalError, InterfaceError, PoolTimeout)
"""What a database that is down, silent, locked or read-only raises (a bug raises other errors)."""


class ApiError(Exception):
    """An error answered to the client as JSON with its own status code (and headers)."""

    def __init__(self, status: int, code: str, message: str,
                 headers: dict[str, str] | None = None, **extra: Any) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}
        self.extra = extra


def error_response(status: int, code: str, message: str, **extra: Any) -> tuple[Any, int]:
    """The JSON body and status of an error answer."""
    return jsonify({"error": {"code": code, "message": message, **extra}}), status


def from_a_browser() -> bool:
    """Did a browser send this request? (Browsers add these headers; curl and services do not.)"""
    return any(name in request.headers for name in ("Origin", "Sec-Fetch-Site", "Sec-Fetch-Mode"))


def json_body(not_json: str = "the request body is not JSON") -> Any:
    """The request body as JSON (any JSON value; None if empty), or a 4xx that says what is
    wrong with it (`not_json` when it is not JSON at all)."""
    raw = request.get_data(cache=True)
    if not request.is_json and from_a_browser():
        raise ApiError(415, "unsupported_media_type", "send the body as application/json")
    try:
        return json.loads(raw) if raw else None
    except RecursionError:
        raise ApiError(400, "invalid_json", "the request body is nested too deeply") from None
    except ValueError:
        raise ApiError(400, "invalid_json", not_json) from None


def json_object() -> dict[str, Any]:
    """The request body as a JSON object, or a 4xx that says what is wrong with it.

    A browser must say the body is JSON (a form or text/plain post, which another site's
    page can send without asking, is refused); a program such as curl may leave the type
    out (`curl -d` sends form data by default), and its body is read as JSON all the same.
    """
    must = "the request body must be a JSON object"
    body = json_body(not_json=must)
    if not isinstance(body, dict):
        raise ApiError(400, "invalid_json", must)
    return body


def register_error_handlers(app: Flask) -> None:
    """Answer every error, expected or not, as JSON; log unexpected ones with their trace."""

    @app.errorhandler(ApiError)
    def on_api_error(error: ApiError) -> Any:
        response, status = error_response(error.status, error.code, error.message, **error.extra)
        return response, status, error.headers

    @app.errorhandler(HTTPException)
    def on_http_error(error: HTTPException) -> Any:
        code = (error.name or "error").lower().replace(" ", "_")
        response, status = error_response(error.code or 500, code, error.description or code)
        valid = getattr(error, "valid_methods", None)  # a 405's methods, in a stable order
        return response, status, {"Allow": ", ".join(sorted(valid))} if valid else {}

    def on_database_fault(error: Exception) -> Any:
        log.warning("database unavailable on %s %s: %s %s", request.method, request.path,
                    type(error).__name__, str(getattr(error, "orig", ""))[:200])
        response, status = error_response(503, "database_unavailable",
                                          "the database does not answer; try again shortly")
        return response, status, {"Retry-After": str(DATABASE_RETRY_AFTER)}

    for kind in DATABASE_ERRORS:
        app.register_error_handler(kind, on_database_fault)

    @app.errorhandler(Exception)
    def on_unexpected(error: Exception) -> tuple[Any, int]:
        log.exception("unhandled error on %s %s", request.method, request.path)
        return error_response(500, "internal_error", "internal error; see the server log")
