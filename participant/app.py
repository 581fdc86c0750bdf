"""The Flask app every participant runs: /invoke, /compensate, /records, /health."""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from typing import Any

from flask import Blueprint, Flask, current_app, jsonify, request
from sqlalchemy import MetaData

from common.db import health as database_health
from common.db import init_database, make_engine
from common.errors import ApiError, json_object
from common.faults import ATTEMPT_HEADER, FAULT_HEADER, TIMEOUT_HEADER, Fault, parse_fault
from common.status import RecordStatus
from common.validation import limit_arg, reject_unknown, saga_id_field, text_field
from common.web import base_app
from participant.records import RecordStore, records_table

log = logging.getLogger(__name__)

SAGA_FIELDS = ("saga_id", "username", "address", "payment")
MAX_ATTEMPT = 1_000_000
MAX_CALLER_TIMEOUT = 60.0


@dataclass(frozen=True)
class ServiceSpec:
    """What makes one participant differ from the others."""

    name: str  # "a"
    table: str  # "table_a"
    column: str  # the table's value column, e.g. "username"
    field: str  # the /invoke field it stores, e.g. "username"
    port: int

    @property
    def env_prefix(self) -> str:
        return f"SERVICE_{self.name.upper()}_"


def participant_config(spec: ServiceSpec, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """Settings from the environment, with defaults for a local run; `overrides` win."""
    env = os.environ
    config = {
        "DATABASE_URL": env.get(spec.env_prefix + "DATABASE_URL",
                                f"sqlite:///var/service_{spec.name}.db"),
        "DB_POOL_SIZE": int(env.get("DB_POOL_SIZE", "40")),
        "FAULT_LATE_MARGIN": float(env.get("FAULT_LATE_MARGIN", "0.5")),
        "MAX_CONTENT_LENGTH": int(env.get("MAX_BODY_BYTES", str(64 * 1024))),
        "LOG_LEVEL": env.get("LOG_LEVEL", "INFO"),
    }
    config.update(overrides or {})
    return config


def create_participant_app(spec: ServiceSpec, overrides: dict[str, Any] | None = None) -> Flask:
    """A participant app for `spec`, its table created if missing."""
    app = base_app(f"service_{spec.name}", participant_config(spec, overrides))
    engine = make_engine(app.config["DATABASE_URL"], app.config["DB_POOL_SIZE"])
    metadata = MetaData()
    table = records_table(metadata, spec.table, spec.column)
    init_database(engine, metadata)
    app.extensions["participant"] = (spec, RecordStore(engine, table, spec.column))
    app.register_blueprint(routes)
    return app


routes = Blueprint("participant", __name__)


def _participant() -> tuple[ServiceSpec, RecordStore]:
    return current_app.extensions["participant"]  # type: ignore[no-any-return]


def _answer(saga_id: str, status: RecordStatus, code: int = 200) -> tuple[Any, int]:
    spec, _ = _participant()
    body: dict[str, Any] = {"saga_id": saga_id, "service": spec.name, "status": status.value}
    if code == 409:
        body["error"] = {"code": "saga_closed",
                         "message": f"saga {saga_id} is {status.value} here; it cannot be applied"}
    return jsonify(body), code


def _fault() -> Fault | None:
    raw = request.headers.get(FAULT_HEADER)
    if not raw:
        return None
    try:
        return parse_fault(raw)
    except ValueError as error:
        raise ApiError(400, "invalid_fault", str(error)) from None


def _number_header(name: str, default: float, maximum: float) -> float:
    raw = request.headers.get(name)
    try:
        value = default if raw is None else float(raw)
    except ValueError:
        value = -1.0
    if not 0 < value <= maximum:  # also keeps a `timeout` fault from sleeping for ever
        raise ApiError(400, "invalid_header", f"{name} must be a number from 0 to {maximum:g}")
    return value


def _injected_failure(message: str) -> ApiError:
    return ApiError(500, "injected_fault", f"injected fault {message}")


@routes.post("/invoke")
def invoke() -> tuple[Any, int]:
    """Apply this service's local transaction for a saga; idempotent per saga_id."""
    spec, store = _participant()
    body = json_object()
    reject_unknown(body, SAGA_FIELDS)
    saga_id = saga_id_field(body)
    for name in SAGA_FIELDS[1:]:
        text_field(body, name, required=(name == spec.field))
    value = body[spec.field]
    fault, attempt = _fault(), int(_number_header(ATTEMPT_HEADER, 1, MAX_ATTEMPT))
    if fault is not None:
        pause = fault.sleep_before_commit(_number_header(TIMEOUT_HEADER, 5.0, MAX_CALLER_TIMEOUT),
                                          current_app.config["FAULT_LATE_MARGIN"])
        if pause:
            time.sleep(pause)
        if fault.fails_before_commit(attempt):
            log.info("saga %s: %s fails before commit (attempt %d)", saga_id, fault, attempt)
            raise _injected_failure(f"{fault}: failed before commit, nothing written "
                                    f"(attempt {attempt})")
    status = store.apply(saga_id, value)
    if status is not RecordStatus.APPLIED:
        log.info("saga %s: invoke refused, the row is %s", saga_id, status.value)
        return _answer(saga_id, status, 409)
    if fault is not None and fault.fails_after_commit():
        log.info("saga %s: applied, then fails (%s)", saga_id, fault)
        raise _injected_failure(f"{fault}: committed, then failed (attempt {attempt})")
    log.info("saga %s: applied", saga_id)
    return _answer(saga_id, status)


@routes.post("/compensate")
def compensate() -> tuple[Any, int]:
    """Undo this service's local transaction for a saga, or tombstone it; idempotent."""
    _, store = _participant()
    body = json_object()
    reject_unknown(body, ("saga_id",))
    saga_id = saga_id_field(body)
    fault, attempt = _fault(), int(_number_header(ATTEMPT_HEADER, 1, MAX_ATTEMPT))
    if fault is not None and fault.fails_compensation(attempt):
        log.info("saga %s: compensation fails (%s, attempt %d)", saga_id, fault, attempt)
        raise _injected_failure(f"{fault}: compensation failed (attempt {attempt})")
    status = store.compensate(saga_id)
    log.info("saga %s: compensated, the row is %s", saga_id, status.value)
    return _answer(saga_id, status)


@routes.get("/records")
def list_records() -> Any:
    """The newest rows first, `?limit=` of them; with `?after=ID`, the rows after it, oldest first."""
    spec, store = _participant()
    reject_unknown(request.args, ("limit", "after"), what="query_argument")
    after = request.args.get("after")
    if after is not None and not after.isdigit():
        raise ApiError(400, "invalid_after", "after must be a row id (a whole number)")
    limit = limit_arg(request.args, maximum=1000)
    records = store.recent(limit) if after is None else store.page(int(after), limit)
    return jsonify({"service": spec.name, "records": [r.as_json(spec.column) for r in records]})


@routes.get("/records/<saga_id>")
def get_record(saga_id: str) -> Any:
    """One saga's row, or 404."""
    spec, store = _participant()
    record = store.get(saga_id)
    if record is None:
        raise ApiError(404, "not_found", f"service {spec.name} has no row for saga {saga_id}")
    return jsonify({"service": spec.name, **record.as_json(spec.column)})


@routes.get("/health")
def health() -> tuple[Any, int]:
    """200 when the service and its database answer, 503 when the database does not."""
    spec, store = _participant()
    body, code = database_health(store.engine, service=spec.name)
    return jsonify(body), code
