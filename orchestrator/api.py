"""The orchestrator's HTTP API: start sagas, read the log, probe services, serve the UI."""

from __future__ import annotations

import hashlib
import json
import uuid
from typing import Any

from flask import Blueprint, current_app, jsonify, render_template, request

from common.db import health as database_health
from common.errors import ApiError, json_object
from common.faults import FAULT_MODES, parse_fault
from common.status import SagaStatus
from common.validation import limit_arg, reject_unknown
from orchestrator.client import ParticipantClient
from orchestrator.consistency import check_consistency, verdict
from orchestrator.engine import SagaEngine
from orchestrator.logbuffer import LogBuffer
from orchestrator.saga import SIGNUP_STEPS, STEP_NAMES
from orchestrator.store import DuplicateIdempotencyKey, Saga, SagaStore
from orchestrator.validation import StartRequest, parse_start

api = Blueprint("orchestrator", __name__)


def _engine() -> SagaEngine:
    return current_app.extensions["saga"]["engine"]  # type: ignore[no-any-return]


def _store() -> SagaStore:
    return current_app.extensions["saga"]["store"]  # type: ignore[no-any-return]


def _client() -> ParticipantClient:
    return current_app.extensions["saga"]["client"]  # type: ignore[no-any-return]


def saga_answer(saga: Saga) -> tuple[dict[str, Any], int]:
    """The /start answer and status code for a saga as it stands."""
    if saga.status is SagaStatus.COMPLETED:
        steps = [{"step": step.name, "status": "APPLIED"} for step in SIGNUP_STEPS]
        return {"saga_id": saga.id, "status": saga.status.value, "steps": steps}, 200
    body = {"saga_id": saga.id, "status": saga.status.value, "failed_step": saga.failed_step,
            "reason": saga.reason, "error": saga.error}
    if saga.status is SagaStatus.COMPENSATION_FAILED:
        body["compensation_error"] = saga.compensation_error
    if not saga.status.finished:  # another orchestrator took it over, or it runs in the background
        return body, 202
    if saga.status is SagaStatus.COMPENSATED and saga.reason == "timeout":
        return body, 504
    return body, 500


@api.post("/start")
def start() -> tuple[Any, int]:
    """Start a sign-up saga; answers when it has finished (202 at once with Prefer: respond-async).

    With an Idempotency-Key header, a repeat of the same request answers as the first did
    and starts nothing; the same key with another body is 422; a repeat while the first is
    still running is 409.
    """
    request_ = parse_start(json_object(), request.args)
    key = request.headers.get("Idempotency-Key")
    if key is not None and not 1 <= len(key) <= 128:
        raise ApiError(400, "invalid_idempotency_key", "Idempotency-Key must be 1 to 128 characters")
    fingerprint = request_hash(request_)
    engine = _engine()
    try:
        saga = engine.create(request_.input, request_.faults, key, fingerprint if key else None)
    except DuplicateIdempotencyKey:
        return _repeat(key or "", fingerprint)
    if _in_background(saga.id):
        return jsonify({"saga_id": saga.id, "status": saga.status.value}), 202
    body, code = saga_answer(_engine().drive(saga.id, logged=saga))
    return jsonify(body), code


def _in_background(saga_id: str, reopened: bool = False) -> bool:
    """With Prefer: respond-async, drive the saga on a worker thread and say so."""
    if "respond-async" not in request.headers.get("Prefer", ""):
        return False
    _engine().submit(saga_id, resumed=reopened, reopened=reopened)
    return True


def request_hash(start_request: StartRequest) -> str:
    """A fingerprint of what a /start asks for, to tell a true repeat from a reused key."""
    canonical = json.dumps({"input": start_request.input, "fail": start_request.faults},
                           sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def _repeat(key: str, fingerprint: str) -> tuple[Any, int]:
    saga = _store().by_idempotency_key(key)
    assert saga is not None, "the key clashed, so its saga exists"
    if saga.request_hash != fingerprint:
        raise ApiError(422, "idempotency_key_reused",
                       f"Idempotency-Key {key!r} was used for a different request", saga_id=saga.id)
    if not saga.status.finished:
        raise ApiError(409, "saga_in_progress",
                       f"the saga started with this Idempotency-Key is still {saga.status.value}",
                       saga_id=saga.id)
    body, code = saga_answer(saga)
    return jsonify(body), code


@api.post("/sagas/<saga_id>/retry")
def retry(saga_id: str) -> tuple[Any, int]:
    """Resume the compensation of a COMPENSATION_FAILED saga, its injected faults cleared."""
    saga = _saga_or_404(saga_id)
    if not _engine().reopen(saga_id):
        raise ApiError(409, "not_retryable",
                       f"saga {saga_id} is {saga.status.value}; only COMPENSATION_FAILED sagas are retried")
    if _in_background(saga_id, reopened=True):
        return jsonify({"saga_id": saga_id, "status": SagaStatus.COMPENSATING.value}), 202
    body, code = saga_answer(_engine().drive(saga_id, resumed=True, reopened=True))
    # The retry did its job when the compensation completed; 500 only if it failed again.
    return jsonify(body), 200 if body["status"] == SagaStatus.COMPENSATED.value else code


@api.get("/consistency")
def consistency() -> tuple[Any, int]:
    """Check every finished saga against the rows A, B and C hold; list each violation."""
    report = check_consistency(_store(), _client(), current_app.config["SERVICE_URLS"])
    return jsonify(report), 200


@api.get("/sagas")
def list_sagas() -> Any:
    """The newest sagas first; `?limit=`, `?status=`."""
    reject_unknown(request.args, ("limit", "status"), what="query_argument")
    status = request.args.get("status")
    if status is not None and status not in SagaStatus.__members__:
        raise ApiError(400, "invalid_status",
                       f"status must be one of {', '.join(SagaStatus.__members__)}")
    sagas = _store().recent(limit_arg(request.args), SagaStatus(status) if status else None)
    return jsonify({"sagas": [saga.as_json() for saga in sagas]})


def _saga_or_404(saga_id: str) -> Saga:
    saga = _store().get(saga_id)
    if saga is None:
        raise ApiError(404, "not_found", f"no saga {saga_id}")
    return saga


@api.get("/sagas/<saga_id>")
def get_saga(saga_id: str) -> Any:
    """One saga with its events in order."""
    saga = _saga_or_404(saga_id)
    events = _store().events(saga_id)
    return jsonify({**saga.as_json(), "events": [event.as_json() for event in events]})


@api.get("/sagas/<saga_id>/records")
def saga_records(saga_id: str) -> Any:
    """The rows A, B and C hold for this saga, fetched from them, and whether they agree."""
    saga = _saga_or_404(saga_id)
    rows: dict[str, Any] = {}
    for name, url in current_app.config["SERVICE_URLS"].items():
        rows[name] = _fetch_record(f"{url}/records/{saga_id}")
    if any("unreachable" in row for row in rows.values() if row):
        return jsonify({"saga_id": saga_id, "rows": rows, "verdict": "unknown",
                        "problems": ["a service did not answer"]})
    outcome, problems = verdict(saga.status, {n: (r or {}).get("status") for n, r in rows.items()})
    return jsonify({"saga_id": saga_id, "rows": rows, "verdict": outcome, "problems": problems})


def _fetch_record(url: str) -> dict[str, Any] | None:
    try:
        response = _client().get(url)
    except Exception as error:  # noqa: BLE001 - a dead service is an answer here
        return {"unreachable": str(error)}
    if response.status_code == 404:
        return None
    return response.json()  # type: ignore[no-any-return]


@api.get("/services")
def services() -> Any:
    """Whether each participant answers its health check."""
    answers = {}
    for name, url in current_app.config["SERVICE_URLS"].items():
        try:
            answers[name] = {"url": url, "status": _client().get(f"{url}/health").json()["status"]}
        except Exception as error:  # noqa: BLE001 - report it, don't fail
            answers[name] = {"url": url, "status": "down", "error": str(error)}
    return jsonify({"services": answers})


@api.post("/test_status")
def test_status() -> Any:
    """Probe a participant's /invoke (A unless told otherwise) and show what it answered.

    The probe saga is compensated at once, so it leaves no applied row behind.
    """
    body = json_object() if request.get_data(cache=True) else {}
    reject_unknown(body, ("service", "fail"))
    service = body.get("service", "a")
    if service not in STEP_NAMES:
        raise ApiError(400, "unknown_service", f"service must be one of {', '.join(STEP_NAMES)}")
    fault = body.get("fail")
    if fault is not None:
        try:
            fault = str(parse_fault(fault))
        except ValueError as error:
            raise ApiError(400, "invalid_fault", str(error)) from None
    url = current_app.config["SERVICE_URLS"][service]
    saga_id = f"probe-{uuid.uuid4().hex}"
    payload = {"saga_id": saga_id, "username": "probe", "address": "probe", "payment": "probe"}
    probe = _client().post(f"{url}/invoke", payload, retries=0, fault=fault)
    _client().post(f"{url}/compensate", {"saga_id": saga_id}, retries=2)
    return jsonify({"service": service, "saga_id": saga_id, "status_code": probe.http_status,
                    "outcome": probe.outcome, "response": probe.body})


@api.get("/logs")
def logs() -> Any:
    """The orchestrator's recent log lines after `?after=SEQ`, optionally `?saga_id=`."""
    reject_unknown(request.args, ("after", "saga_id", "limit"), what="query_argument")
    after = request.args.get("after", "0")
    if not after.isdigit():
        raise ApiError(400, "invalid_after", "after must be a whole number")
    buffer: LogBuffer = current_app.extensions["saga"]["logs"]
    lines = buffer.read(int(after), request.args.get("saga_id") or None,
                        limit_arg(request.args, default=500, maximum=2000))
    return jsonify({"lines": lines, "last": buffer.sequence})


@api.get("/definition")
def definition() -> Any:
    """The saga's steps in order, and the fault modes a participant can act out."""
    return jsonify({"steps": [{"name": s.name, "action": s.action,
                               "compensation": s.compensation} for s in SIGNUP_STEPS],
                    "fault_modes": FAULT_MODES,
                    "call_timeout": current_app.config["CALL_TIMEOUT"]})


@api.get("/health")
def health() -> tuple[Any, int]:
    """200 when the orchestrator and its database answer, 503 when the database does not."""
    body, code = database_health(_store().engine,
                                 orchestrator_id=current_app.config["ORCHESTRATOR_ID"])
    return jsonify(body), code


@api.get("/")
def index() -> str:
    """The dashboard."""
    return render_template("index.html")
