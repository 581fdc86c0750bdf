"""A participant's HTTP endpoints for the choreographed saga: the sign-up (at A), events in, dead letters."""

from __future__ import annotations

import logging
from typing import Any

from flask import Blueprint, current_app, jsonify, request

from choreography.service import ChoreographedService
from common.errors import ApiError, json_body, json_object
from common.ids import new_saga_id
from common.validation import parse_saga_request, reject_unknown
from common.web import is_signed, kept, require_signature
from messaging.events import event_id_field
from messaging.transport import take_in

log = logging.getLogger(__name__)

choreography_routes = Blueprint("choreography", __name__)


def _choreography() -> ChoreographedService:
    return kept(ChoreographedService)


@choreography_routes.post("/signups")
def sign_up() -> tuple[Any, int]:
    """Start a choreographed sign-up here, at the service it enters at: 202 {"saga_id", "status"}.

    Takes the body /start takes (its ?fail_<step>= flags, and "isolation"); bad input is 400 and
    nothing is written. The rest happens by events; follow it at the observer,
    GET :5000/choreography/sagas/<id>. (The isolation lab's own fault only from a signed call.)
    """
    choreography = _choreography()
    flow = choreography.flows.default
    if choreography.spec.name != flow.entry:
        raise ApiError(404, "not_found", f"sign-ups enter at service {flow.entry}")
    lab = is_signed(current_app.config["SERVICE_SECRET"])
    signup = parse_saga_request(json_object(), request.args, tuple(flow.fields[s] for s in flow.steps),
                                flow.steps, current_app.config["FAULTS_ENABLED"], lab=lab)
    envelope = choreography.sign_up(signup.input, signup.faults, new_saga_id(),
                                    signup.isolation or current_app.config["ISOLATION"])
    return jsonify({"saga_id": envelope.saga_id, "status": "RUNNING"}), 202


@choreography_routes.get("/signups/<saga_id>")
def signed_up(saga_id: str) -> Any:
    """Whether a sign-up was taken in here (its deadline, and when its clock stopped), or 404."""
    record = _choreography().deadlines.get(saga_id)
    if record is None:
        raise ApiError(404, "not_found", f"no sign-up {saga_id} here")
    return jsonify(record)


@choreography_routes.post("/events")
def receive_event() -> tuple[Any, int]:
    """Take in an event from another service's relay (signed, like every call between services):
    recorded once in the inbox, then handled; a repeat is acknowledged and changes nothing."""
    require_signature(current_app.config["SERVICE_SECRET"])
    choreography = _choreography()

    answer, status = take_in(json_body(), choreography.flows.routes, choreography.receive,
                             choreography.spec.name)
    return jsonify(answer), status


@choreography_routes.post("/dead-letters/redrive")
def redrive() -> tuple[Any, int]:
    """Send or handle a dead-lettered event again (signed: the observer asks on the dashboard's
    behalf): `{"where": "outbox" | "inbox" | "broker", "event_id"}`. Idempotent: an event not
    dead-lettered (any more) changes nothing and answers `"redriven": 0`."""
    require_signature(current_app.config["SERVICE_SECRET"])
    body = json_object()
    reject_unknown(body, ("where", "event_id"))
    where = body.get("where")
    if not isinstance(where, str) or where not in ("outbox", "inbox", "broker"):
        raise ApiError(400, "invalid_field", "'where' must be outbox, inbox or broker")
    event_id = event_id_field(body)
    choreography = _choreography()
    if where == "broker" and not choreography.outbox.knows(event_id):
        raise ApiError(404, "not_found", f"service {choreography.spec.name} never published event "
                       f"{event_id}: only its owner can send an event again")
    again = choreography.redrive(where, event_id)
    return jsonify({"service": choreography.spec.name, "where": where, "event_id": event_id,
                    "redriven": again}), 200


@choreography_routes.get("/dead-letters")
def dead_letters() -> Any:
    """Events this service could not deliver or could never handle, newest first."""
    return jsonify({"service": _choreography().spec.name, "dead_letters": _choreography().dead_letters()})
