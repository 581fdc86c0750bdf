"""Starting sagas, reading one with its story, and retrying one: /start, /sagas/<id>, its retry.
(The list and a saga's rows are common/reads.py's, as for the choreographed saga.)"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

from flask import Blueprint, current_app, jsonify, request

from common.errors import ApiError, json_object
from common.status import Isolation, SagaStatus
from common.validation import SagaRequest
from orchestrator.api.views import event_json, saga_json, start_answer
from orchestrator.model import DuplicateIdempotencyKey, Run, Saga
from orchestrator.services import services
from orchestrator.validation import parse_start

sagas_api = Blueprint("sagas", __name__)

MAX_IDEMPOTENCY_KEY = 128
IDEMPOTENCY_KEY = re.compile(rf"[\x21-\x7e]{{1,{MAX_IDEMPOTENCY_KEY}}}")


@sagas_api.post("/start")
def start() -> tuple[Any, int]:
    """Start a saga under the default definition; answers when it has finished (202 at once
    with Prefer: respond-async).

    With an Idempotency-Key header, a repeat of the same request answers as the first did
    and starts nothing; the same key with another body is 422; a repeat while the first is
    still running is 409.
    """
    definition = services().definitions.default
    request_ = parse_start(json_object(), request.args, definition, current_app.config["FAULTS_ENABLED"])
    key = request.headers.get("Idempotency-Key")
    if key is not None and not IDEMPOTENCY_KEY.fullmatch(key):
        raise ApiError(400, "invalid_idempotency_key",
                       f"Idempotency-Key must be 1 to {MAX_IDEMPOTENCY_KEY} printable ASCII characters")
    isolation = request_.isolation or current_app.config["ISOLATION"]
    fingerprint = request_hash(request_, isolation)
    engine = services().engine
    if _prefers_async() and not engine.has_room():
        raise _queue_full()
    try:
        saga = engine.create(request_.input, request_.faults, key, fingerprint if key else None, isolation)
    except DuplicateIdempotencyKey:
        return _repeat(key or "", fingerprint)
    if _in_background(saga.id, Run.NEW):
        return jsonify({"saga_id": saga.id, "status": saga.status.value}), 202
    body, code = start_answer(engine.drive(saga.id, logged=saga), definition)
    return jsonify(body), code


def _prefers_async() -> bool:
    return "respond-async" in request.headers.get("Prefer", "")


def _queue_full() -> ApiError:
    return ApiError(503, "queue_full", "too many sagas are waiting to be driven; try again shortly",
                    headers={"Retry-After": "1"})


def _in_background(saga_id: str, run: Run) -> bool:
    """With Prefer: respond-async, drive the saga on a worker thread and say so."""
    if not _prefers_async():
        return False
    services().engine.submit(saga_id, run)
    return True


def request_hash(start_request: SagaRequest, isolation: Isolation) -> str:
    """A fingerprint of what a /start asks for, to tell a true repeat from a reused key."""
    canonical = json.dumps({"input": start_request.input, "fail": start_request.faults,
                            **({"isolation": isolation.value} if isolation is not Isolation.NONE else {})},
                           sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def _repeat(key: str, fingerprint: str) -> tuple[Any, int]:
    saga = services().store.by_idempotency_key(key)
    assert saga is not None, "the key clashed, so its saga exists"
    if saga.request_hash != fingerprint:
        raise ApiError(422, "idempotency_key_reused",
                       f"Idempotency-Key {key!r} was used for a different request", saga_id=saga.id)
    if not saga.status.finished:
        raise ApiError(409, "saga_in_progress",
                       f"the saga started with this Idempotency-Key is still {saga.status.value}",
                       saga_id=saga.id)
    body, code = start_answer(saga, services().engine.definition_of(saga))
    return jsonify(body), code


@sagas_api.post("/sagas/<saga_id>/retry")
def retry(saga_id: str) -> tuple[Any, int]:
    """Resume the compensation of a COMPENSATION_FAILED saga, its injected faults cleared."""
    saga = _saga_or_404(saga_id)
    engine = services().engine
    if _prefers_async() and not engine.has_room():
        raise _queue_full()
    if not engine.reopen(saga_id):
        raise ApiError(409, "not_retryable",
                       f"saga {saga_id} is {saga.status.value}; only COMPENSATION_FAILED sagas are retried")
    if _in_background(saga_id, Run.REOPENED):
        return jsonify({"saga_id": saga_id, "status": SagaStatus.COMPENSATING.value}), 202
    body, code = start_answer(engine.drive(saga_id, Run.REOPENED), engine.definition_of(saga))
    # The retry did its job when the compensation completed; 500 only if it failed again.
    return jsonify(body), 200 if body["status"] == SagaStatus.COMPENSATED.value else code


def _saga_or_404(saga_id: str) -> Saga:
    saga = services().store.get(saga_id)
    if saga is None:
        raise ApiError(404, "not_found", f"no saga {saga_id}")
    return saga


@sagas_api.get("/sagas/<saga_id>")
def get_saga(saga_id: str) -> Any:
    """One saga with its events in order."""
    saga = _saga_or_404(saga_id)
    events = services().store.events(saga_id)
    return jsonify({**saga_json(saga), "events": [event_json(event) for event in events]})
