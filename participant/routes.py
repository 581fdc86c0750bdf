"""A participant's HTTP API: /invoke, /compensate, /cancel, /records, /health."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from flask import Blueprint, Response, current_app, g, jsonify, request
from flask.typing import ResponseReturnValue

from common.db import iso
from common.declaration import Service
from common.errors import ApiError, json_object
from common.faults import (
    ATTEMPT_HEADER,
    FAULT_HEADER,
    TIMEOUT_HEADER,
    Fault,
    InjectedFailure,
    NoSleepSlot,
    Sleeps,
)
from common.metrics import HANDLER_DURATION, PARTICIPANT_REQUESTS
from common.status import LIVE, Isolation, Model, RecordStatus
from common.tracing import end_server_span, start_server_span
from common.validation import (
    WHOLE_NUMBER,
    fault_field,
    isolation_field,
    limit_arg,
    reject_unknown,
    saga_id_field,
    text_field,
    whole_number_arg,
)
from common.web import database_health, kept, require_signature
from participant.records import Held, Outcome, Record, RecordStore, WrongModel

log = logging.getLogger(__name__)
T = TypeVar("T")

MAX_ATTEMPT = 1_000_000
MAX_CALLER_TIMEOUT = 60.0

routes = Blueprint("participant", __name__)


@dataclass(frozen=True)
class Participant:
    """What a participant's handlers reach, built once by its app: its spec, its rows, and its
    slots for injected sleeps. (Its part in the choreographed saga is choreography/'s.)"""

    spec: Service
    records: RecordStore
    sleeps: Sleeps
    locks: bool = False  # a step it runs holds a semantic lock (Step(..., locks=True)) in some definition


def participant() -> Participant:
    return kept(Participant)


SIGNED = frozenset({"participant.invoke", "participant.compensate", "participant.cancel",
                    "participant.confirm"})
RESULTS = {"APPLIED": "applied", "PENDING": "pending", "COMPENSATED": "compensated", "CANCELLED": "cancelled"}
LOCK_RETRY_AFTER = 1  # seconds a call refused by a semantic lock is told to wait (Retry-After)


@routes.before_request
def trace_and_time() -> None:
    """A span for each call that changes a row (a child of the orchestrator's attempt), and its timing."""
    if request.endpoint in SIGNED:
        spec, _ = _participant()
        action = request.endpoint.removeprefix("participant.")
        g.span = start_server_span(f"{action} {spec.name}", request.headers,
                                   {"saga.service": spec.name, "saga.action": action,
                                    "http.request.method": request.method})
        g.started = time.perf_counter()


@routes.after_request
def count(response: Response) -> Response:
    if "started" in g:
        spec, _ = _participant()
        action = (request.endpoint or "").removeprefix("participant.")
        PARTICIPANT_REQUESTS.labels(spec.name, action, _result(response)).inc()
        HANDLER_DURATION.labels(spec.name, action).observe(time.perf_counter() - g.started)
    return response


@routes.teardown_request
def end_span(error: BaseException | None) -> None:
    if "span" in g:
        span, token = g.pop("span")
        end_server_span(span, token, 500 if error is not None else g.get("status", 200))


def _result(response: Response) -> str:
    """What a call came to, in a word from a small set (a metric's label)."""
    g.status = code = response.status_code
    body = response.get_json(silent=True) or {}
    if code < 300:
        return RESULTS.get(str(body.get("status")), "ok")
    error = (body.get("error") or {}).get("code") if isinstance(body.get("error"), dict) else None
    if code == 500:
        return "fault" if error == "injected_fault" else "error"
    if code == 409 and error in ("taken", "locked"):
        return str(error)
    return {401: "unauthorized", 409: "refused", 503: "unavailable"}.get(code, "invalid")


@routes.before_request
def only_signed_calls_change_a_row() -> None:
    """/invoke, /compensate and /cancel take only calls signed with SERVICE_SECRET (reads are open)."""
    if request.endpoint in SIGNED:
        require_signature(current_app.config["SERVICE_SECRET"])


def _participant() -> tuple[Service, RecordStore]:
    found = participant()
    return found.spec, found.records


def record_json(record: Record, field: str) -> dict[str, Any]:
    """A row as the API shows it; the value is named by the saga input field it holds."""
    return {"id": record.id, "saga_id": record.saga_id, field: record.value,
            "status": record.status.value, "model": record.model.value,
            "created_at": iso(record.created_at),
            "updated_at": iso(record.updated_at)}


def _answer(saga_id: str, status: RecordStatus, code: int = 200, refused: str = "applied") -> tuple[Any, int]:
    spec, _ = _participant()
    body: dict[str, Any] = {"saga_id": saga_id, "service": spec.name, "status": status.value}
    if code == 409:
        body["error"] = {"code": "saga_closed",
                         "message": f"saga {saga_id} is {status.value} here; it cannot be {refused}"}
    return jsonify(body), code


def _fault() -> Fault | None:
    """The fault a (signed) call asks this step to act out; 400 when fault injection is off,
    unless it is the isolation lab's own."""
    raw = request.headers.get(FAULT_HEADER)
    if not raw:
        return None
    return fault_field(raw, current_app.config["FAULTS_ENABLED"], lab=True)  # (the call is signed)


def _attempt() -> int:
    """The attempt number a caller sends (X-Saga-Attempt): a whole number from 1, or 400."""
    raw = request.headers.get(ATTEMPT_HEADER, "1")
    if not (WHOLE_NUMBER.fullmatch(raw) and 1 <= int(raw) <= MAX_ATTEMPT):  # (never int() of 5,000 digits)
        raise ApiError(400, "invalid_header",
                       f"{ATTEMPT_HEADER} must be a whole number from 1 to {MAX_ATTEMPT}")
    return int(raw)


def _number_header(name: str, default: float, maximum: float) -> float:
    raw = request.headers.get(name)
    try:
        value = default if raw is None else float(raw)
    except ValueError:
        value = -1.0
    if not 0 < value <= maximum:  # also keeps a `timeout` fault from sleeping for ever
        raise ApiError(400, "invalid_header", f"{name} must be a number from 0 to {maximum:g}")
    return value


def _acted_out(act: Callable[[], None]) -> None:
    """Act out an injected fault: a failure is a 500, a sleep with no slot free a 503 at once."""
    try:
        act()
    except InjectedFailure as failure:
        log.info("%s", failure)
        raise ApiError(500, "injected_fault", str(failure)) from None
    except NoSleepSlot:
        raise ApiError(503, "fault_capacity", "too many injected sleeps at once; try again",
                       headers={"Retry-After": "1"}) from None


@routes.post("/invoke")
def invoke() -> tuple[Any, int]:
    """Apply this service's local transaction for a saga; idempotent per saga_id.

    The body holds the saga id and this service's own field, nothing else: a participant
    is sent only what its step needs, and refuses what it would not store.
    """
    spec, store = _participant()
    body = json_object()
    reject_unknown(body, ("saga_id", spec.field, "isolation"))
    saga_id = saga_id_field(body)
    value = text_field(body, spec.field)
    assert value is not None
    pending = isolation_field(body) is Isolation.SEMANTIC_LOCK
    if pending and not participant().locks:
        raise ApiError(400, "invalid_field", f"service {spec.name} runs no step that holds a semantic "
                                             "lock: 'isolation' is for the locking step's service")
    fault, attempt = _fault(), _attempt()
    if fault is not None:
        pause = fault.sleep_before_commit(_number_header(TIMEOUT_HEADER, 5.0, MAX_CALLER_TIMEOUT),
                                          current_app.config["FAULT_LATE_MARGIN"],
                                          current_app.config["LAB_DELAY"], attempt)
        _acted_out(lambda: fault.before_commit(saga_id, attempt, pause, participant().sleeps))
    try:
        status = _orchestrated(lambda: store.apply(saga_id, value, Model.ORCHESTRATION, pending)).status
    except Held as held:
        log.info("saga %s: invoke refused: %s", saga_id, held)
        if held.locked:
            raise ApiError(409, "locked", str(held), held_by=held.holder,
                           headers={"Retry-After": str(LOCK_RETRY_AFTER)}) from None
        raise ApiError(409, "taken", str(held), held_by=held.holder) from None
    if status not in LIVE:
        log.info("saga %s: invoke refused, the row is %s", saga_id, status.value)
        return _answer(saga_id, status, 409)
    if fault is not None:
        _acted_out(lambda: fault.after_commit(attempt))
    log.info("saga %s: applied", saga_id)
    return _answer(saga_id, status)


@routes.post("/confirm")
def confirm() -> tuple[Any, int]:
    """The saga completed: release its semantic lock here (its PENDING row becomes APPLIED).
    Idempotent; 404 if the saga has no row here, 409 if its row is not live (undone)."""
    _, store = _participant()
    body = json_object()
    reject_unknown(body, ("saga_id",))
    saga_id = saga_id_field(body)
    _attempt()  # checked like every call's, though a confirm acts out no fault
    outcome = _orchestrated(lambda: store.confirm(saga_id, Model.ORCHESTRATION))
    if outcome is None:
        raise ApiError(404, "not_found", f"saga {saga_id} has no row here: nothing to confirm")
    status = outcome.status
    if status is not RecordStatus.APPLIED:
        return _answer(saga_id, status, 409, refused="confirmed")
    log.info("saga %s: confirmed", saga_id)
    return _answer(saga_id, status)


@routes.post("/compensate")
def compensate() -> tuple[Any, int]:
    """Undo this service's local transaction for a saga, or tombstone it; idempotent."""
    return _undo("compensation", lambda store, saga_id: store.compensate(saga_id, Model.ORCHESTRATION))


@routes.post("/cancel")
def cancel() -> tuple[Any, int]:
    """Make sure a saga's step never commits here, without undoing one that did: a tombstone
    if there is no row (CANCELLED), else the row's status as it is (APPLIED: it committed)."""
    return _undo("cancel", lambda store, saga_id: store.cancel(saga_id, Model.ORCHESTRATION))


def _orchestrated(operation: Callable[[], T]) -> T:
    """Run an operation for the orchestrator: 409 if the saga's row here is a choreographed one."""
    try:
        return operation()
    except WrongModel as error:
        log.warning("refused: %s", error)
        raise ApiError(409, "wrong_model", str(error)) from None


def _undo(what: str, operation: Callable[[RecordStore, str], Outcome]) -> tuple[Any, int]:
    """/compensate and /cancel: `{"saga_id"}` in, the row's status out; the same faults."""
    _, store = _participant()
    body = json_object()
    reject_unknown(body, ("saga_id",))
    saga_id = saga_id_field(body)
    fault, attempt = _fault(), _attempt()
    if fault is not None:
        _acted_out(lambda: fault.undoing(what, attempt))
    status = _orchestrated(lambda: operation(store, saga_id)).status
    log.info("saga %s: %s, the row is %s", saga_id, what, status.value)
    return _answer(saga_id, status)


@routes.get("/records")
def list_records() -> Any:
    """The newest rows first, `?limit=` of them; with `?after=ID`, the rows after it, oldest first;
    with `?saga_after=S` (and `&saga_until=T`), the rows of saga ids after S (up to T), by saga id."""
    spec, store = _participant()
    reject_unknown(request.args, ("limit", "after", "saga_after", "saga_until"), what="query_argument")
    limit = limit_arg(request.args, maximum=1000)
    after = whole_number_arg(request.args, "after", default=0, maximum=2**62)
    by_saga = "saga_after" in request.args or "saga_until" in request.args
    if by_saga and "after" in request.args:
        raise ApiError(400, "conflicting_query", "page by row id (after) or by saga id (saga_after, "
                       "saga_until), not both")
    if by_saga:
        records = store.between(request.args.get("saga_after", ""), request.args.get("saga_until"), limit)
    elif "after" in request.args:
        records = store.page(after, limit)
    else:
        records = store.recent(limit)
    return jsonify({"service": spec.name, "records": [record_json(r, spec.field) for r in records]})


@routes.get("/records/<saga_id>")
def get_record(saga_id: str) -> Any:
    """One saga's row, or 404."""
    spec, store = _participant()
    record = store.get(saga_id)
    if record is None:
        raise ApiError(404, "not_found", f"service {spec.name} has no row for saga {saga_id}")
    return jsonify({"service": spec.name, **record_json(record, spec.field)})


@routes.get("/health")
def health() -> ResponseReturnValue:
    """200 when the service and its database answer, 503 when the database does not."""
    spec, store = _participant()
    return database_health(store.engine, service=spec.name)
