"""Looking after the system: consistency, service health, probes, the log, the definition, health."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from flask import Blueprint, current_app, jsonify, request
from flask.typing import ResponseReturnValue

from common.consistency import DEFAULT_PAGE, MAX_PAGE, check_consistency
from common.db import utcnow
from common.errors import ApiError, json_object
from common.faults import FAULT_MODES
from common.stats import buckets
from common.validation import (
    SAGA_ID_PATTERN,
    WHOLE_NUMBER,
    fault_field,
    limit_arg,
    reject_unknown,
    whole_number_arg,
)
from common.web import database_health, refuse_cross_site_reads
from orchestrator.api.views import definition_json
from orchestrator.services import services

operations_api = Blueprint("operations", __name__)


@operations_api.get("/consistency")
def consistency() -> tuple[Any, int]:
    """Check a page of sagas of both models against the rows their participants hold: the next
    `?limit=` sagas after the cursor `?after=` (the previous page's `next`)."""
    refuse_cross_site_reads()  # a page elsewhere must not make this process read its tables
    reject_unknown(request.args, ("after", "limit"), what="query_argument")
    after = request.args.get("after", "")
    if "after" in request.args and not SAGA_ID_PATTERN.fullmatch(after):
        raise ApiError(400, "invalid_after", "after must be a saga id, as a page's `next` gives it")
    limit = limit_arg(request.args, default=DEFAULT_PAGE, maximum=MAX_PAGE)
    report = check_consistency(services().sagas, services().gateway, after, limit,
                               current_app.config["LOCK_ATTENTION_AFTER"])
    return jsonify(report), 200


@operations_api.get("/services")
def participants() -> Any:
    """Whether each participant answers its health check."""
    gateway = services().gateway
    return jsonify({"services": {name: gateway.health(name) for name in gateway.services}})


@operations_api.post("/test_status")
def test_status() -> Any:
    """Probe a participant's /invoke (the first step's unless told otherwise) and show what it
    answered. The probe saga is compensated at once (`undone` says whether that worked: if not,
    its row may stay, and /consistency lists it)."""
    body = json_object() if request.get_data(cache=True) else {}
    reject_unknown(body, ("service", "fail"))
    known = services().definitions.default.participants
    service = body.get("service", known[0])
    if service not in known:
        raise ApiError(400, "unknown_service", f"service must be one of {', '.join(known)}")
    fault = body.get("fail")
    if fault is not None:
        fault = str(fault_field(fault, current_app.config["FAULTS_ENABLED"]))
    probe = services().gateway.probe(service, fault, current_app.config["CALL_TIMEOUT"])
    return jsonify({"service": service, "saga_id": probe.saga_id,
                    "status_code": probe.attempt.http_status, "outcome": probe.attempt.outcome,
                    "response": probe.attempt.body, "undone": probe.undone})


@operations_api.get("/logs")
def logs() -> Any:
    """The orchestrator's recent log lines after `?after=SEQ`, optionally `?saga_id=`."""
    reject_unknown(request.args, ("after", "saga_id", "limit"), what="query_argument")
    after = whole_number_arg(request.args, "after", default=0)
    buffer = services().logs
    lines = buffer.read(after, request.args.get("saga_id") or None,
                        limit_arg(request.args, default=500, maximum=2000))
    return jsonify({"lines": lines, "last": buffer.sequence})


@operations_api.get("/definition")
def definition() -> Any:
    """The definition new sagas start under, or `?key=name@version` (every step with its kind and
    policy), the versions the engine drives, and the fault modes a participant can act out."""
    reject_unknown(request.args, ("key",), what="query_argument")
    config = current_app.config
    policy = (config["CALL_TIMEOUT"], config["CALL_RETRIES"], config["COMPENSATION_RETRIES"])
    definitions = services().definitions
    chosen = definitions.default
    if "key" in request.args:
        name, _, version = request.args["key"].partition("@")
        found = definitions.get(name, int(version)) if WHOLE_NUMBER.fullmatch(version) else None
        if found is None:
            raise ApiError(404, "not_found", f"no definition {request.args['key']!r}; "
                           f"known: {', '.join(d.key for d in definitions)}")
        chosen = found
    return jsonify({**definition_json(chosen, *policy), "default": definitions.default.key,
                    "known": [d.key for d in definitions],
                    "fault_modes": FAULT_MODES, "faults_enabled": config["FAULTS_ENABLED"],
                    "call_timeout": config["CALL_TIMEOUT"]})


@operations_api.get("/stats")
def stats() -> Any:
    """For the dashboard's charts: sagas finished per second by outcome and their p50/p99
    duration, in buckets over the last `?minutes=` (1-30, default 5), of one `?model=`."""
    reject_unknown(request.args, ("minutes", "model", "bucket"), what="query_argument")
    minutes = whole_number_arg(request.args, "minutes", default=5, minimum=1, maximum=30)
    bucket = whole_number_arg(request.args, "bucket", default=10, minimum=1, maximum=300)
    model = request.args.get("model", "orchestration")
    if model not in ("orchestration", "choreography"):
        raise ApiError(400, "invalid_model", "model must be orchestration or choreography")
    now = utcnow()
    since = now - timedelta(minutes=minutes)
    source = services().store if model == "orchestration" else services().observer
    return jsonify({"model": model, "minutes": minutes, "bucket_seconds": bucket,
                    "buckets": buckets(source.finished_since(since), now, minutes, bucket)})


@operations_api.get("/health")
def health() -> ResponseReturnValue:
    """200 when the orchestrator and its database answer, 503 when the database does not."""
    return database_health(services().store.engine,
                           orchestrator_id=current_app.config["ORCHESTRATOR_ID"])
