"""The Flask set-up every process shares: settings, logging, JSON errors, and its boundaries:
no cross-site writes, security headers on every answer, and signed calls where asked."""

from __future__ import annotations

import logging
from importlib.resources import files
from typing import Any, TypeVar

import yaml
from flask import Flask, current_app, jsonify, request
from flask.typing import ResponseReturnValue
from sqlalchemy import Engine
from werkzeug.exceptions import SecurityError
from werkzeug.wrappers import Response
from werkzeug.wsgi import get_host

from common.db import database_state
from common.errors import ApiError, from_a_browser, register_error_handlers
from common.logs import configure_logging, escape
from common.metrics import exposition
from common.signing import SIGNATURE_HEADER, BadSignature, verify
from common.tracing import setup_tracing

log = logging.getLogger(__name__)

SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; script-src 'self'; style-src 'self'; "
                               "img-src 'self' data:; connect-src 'self'; object-src 'none'; "
                               "base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
}
UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})

Parts = TypeVar("Parts")


def keep(app: Flask, parts: object) -> None:
    """Keep a part's services (one typed object, built once) on its app, for its handlers."""
    app.extensions[type(parts).__qualname__] = parts


def kept(kind: type[Parts]) -> Parts:
    """The current app's services of this kind (inside a request or an app context): the one way
    every part's handlers reach what its app was built with."""
    found = current_app.extensions.get(kind.__qualname__)
    if not isinstance(found, kind):
        raise RuntimeError(f"this app keeps no {kind.__qualname__}")
    return found


def base_app(name: str, config: dict[str, Any], **flask_options: Any) -> Flask:
    """A Flask app with `config`, one log format, unsorted JSON keys, JSON errors, no
    cross-site writes, and security headers on every answer."""
    flask_options.setdefault("static_folder", None)  # only the dashboard serves files
    app = Flask(name, **flask_options)
    app.config.update(config)
    app.json.sort_keys = False  # type: ignore[attr-defined]  # answers read in the order written
    configure_logging(app.config["LOG_LEVEL"], process=name, json_lines=app.config.get("LOG_JSON", False))
    setup_tracing(name)
    register_error_handlers(app)
    app.config["TRUSTED_HOSTS"] = list(app.config["ALLOWED_HOSTS"])
    app.before_request(refuse_unknown_hosts)  # first: before any other check answers
    app.before_request(refuse_cross_site_writes)
    app.after_request(add_security_headers)
    app.add_url_rule("/metrics", "metrics", metrics)
    return app


def serve_openapi(app: Flask, package: str, name: str = "openapi.yaml") -> None:
    """Serve `package`'s OpenAPI description (YAML, read once, now) as JSON at GET /openapi.json."""
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml's, where PyYAML has it: 10 times faster
    document = yaml.load(files(package).joinpath(name).read_text(encoding="utf-8"), Loader=loader)

    def openapi() -> Response:
        """This process's OpenAPI description."""
        return jsonify(document)

    app.add_url_rule("/openapi.json", "openapi", openapi)


def metrics() -> Response:
    """This process's metrics in Prometheus' text exposition format (for a scraper: no auth,
    like /health, and nothing in it names a saga)."""
    body, content_type = exposition()
    return Response(body, content_type=content_type)


def refuse_unknown_hosts() -> None:
    """400 for a Host header outside ALLOWED_HOSTS, on every path (Flask's TRUSTED_HOSTS check,
    made before any other check can answer first)."""
    try:
        get_host(request.environ, current_app.config["TRUSTED_HOSTS"])
    except SecurityError:
        log.warning("refused a request for host %s", escape(request.environ.get("HTTP_HOST", "")))
        raise ApiError(400, "unknown_host", "this system is not served under that host name; "
                       "ALLOWED_HOSTS lists the names it answers to") from None


def refuse_cross_site_writes() -> None:
    """A browser's write from another origin is refused (a page elsewhere cannot start a saga).

    Browsers say where a request comes from (Origin, Sec-Fetch-Site); curl and the services
    send neither, so they are not affected. An Origin must be one of ALLOWED_ORIGINS (never
    compared with the Host header, which a DNS-rebinding page controls).
    """
    if request.method not in UNSAFE_METHODS:
        return
    site = request.headers.get("Sec-Fetch-Site")
    origin = request.headers.get("Origin")
    if site not in (None, "same-origin", "none") or (
            origin is not None and origin not in current_app.config["ALLOWED_ORIGINS"]):
        log.warning("refused a cross-site %s %s (Origin %s, Sec-Fetch-Site %s)", request.method,
                    request.path, origin, site)
        raise ApiError(403, "cross_site_request", "requests from another site are refused")


def refuse_cross_site_reads() -> None:
    """For a read that costs the process work (a scan, a long wait): a browser may ask only from
    the dashboard's own page, so a page elsewhere cannot make every visitor's browser ask."""
    if request.headers.get("Sec-Fetch-Site") in ("cross-site", "same-site"):
        raise ApiError(403, "cross_site_request", "requests from another site are refused")


def add_security_headers(response: Response) -> Response:
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    return response


def require_signature(secret: str) -> None:
    """401 unless the request carries a valid X-Saga-Signature made with `secret`."""
    error = _bad_signature(secret)
    if error is not None:
        log.warning("refused an unsigned call: %s %s from %s: %s", request.method, request.path,
                    request.remote_addr, error)
        raise ApiError(401, "unauthorized", f"this call must be signed by a service: {error}")


def is_signed(secret: str) -> bool:
    """Does the request carry a valid X-Saga-Signature made with `secret`? (For what a signed
    caller may ask beyond what anyone may: the isolation lab's own fault.)"""
    return SIGNATURE_HEADER in request.headers and _bad_signature(secret) is None


def _bad_signature(secret: str) -> BadSignature | None:
    """Why the request's X-Saga-Signature is not a valid one made with `secret`; None if it is."""
    try:
        verify(secret, request.headers.get(SIGNATURE_HEADER), request.method, request.path,
               request.get_data(cache=True), headers=request.headers)
    except BadSignature as error:
        return error
    return None


def require_signature_or_dashboard(secret: str) -> None:
    """For an operator's write: the dashboard's own page may send it (a browser's request from
    another origin never gets here: `refuse_cross_site_writes`); anything else must be signed."""
    if not from_a_browser():
        require_signature(secret)


def database_health(engine: Engine, **identity: Any) -> ResponseReturnValue:
    """A /health answer: 200 when the database answers, 503 (saying how it fails) when not."""
    state = database_state(engine)
    if state != "ok":
        return jsonify({**identity, "status": "unhealthy", "database": state}), 503, {"Retry-After": "5"}
    return jsonify({**identity, "status": "ok", "database": state}), 200
