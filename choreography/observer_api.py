"""The observer's HTTP API, served beside the dashboard: /choreography/...

Events come in (signed) at POST /choreography/events over the embedded transport; the
sagas, their events, their rows, the dead letters and the flow go out to the dashboard and
to curl. POST /choreography/signups passes a sign-up on to the entry service, so that the
dashboard (which talks to its own origin only) can start one; it is a client of the saga,
not a part of it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import requests
from flask import Blueprint, Response, jsonify, request

from choreography.events import BadEnvelope, Envelope
from choreography.flow import ENTRY, EVENT_TYPES, FIELDS, FLOW, SOURCES, STEPS
from choreography.observer import PARTS, Observer
from common.consistency import RowReader, Unreachable, verdict
from common.errors import ApiError, json_object
from common.status import SagaStatus
from common.validation import limit_arg, reject_unknown, whole_number_arg
from common.web import require_signature

MAX_WAIT = 30  # seconds a reader may ask to wait for a saga to finish


@dataclass(frozen=True)
class ObserverSettings:
    secret: str
    entry_url: str  # where sign-ups enter (service A)
    service_urls: dict[str, str]  # for their dead letters


def observer_blueprint(observer: Observer, rows: RowReader, settings: ObserverSettings,
                       dead_letters_elsewhere: Callable[[], list[dict[str, Any]]] = list) -> Blueprint:
    """The /choreography blueprint over `observer`; `rows` reads the participants' rows."""
    api = Blueprint("observer", __name__, url_prefix="/choreography")
    session = requests.Session()
    session.trust_env = False

    @api.post("/events")
    def receive() -> tuple[Any, int]:
        """An event from a service's relay (signed): recorded once; a repeat changes nothing."""
        require_signature(settings.secret)
        try:
            envelope = Envelope.from_json(json_object(), EVENT_TYPES, SOURCES)
        except BadEnvelope as error:
            raise ApiError(400, "bad_event", str(error)) from None
        new = observer.receive(envelope)
        return jsonify({"event_id": envelope.event_id, "status": "received" if new else "duplicate"}), 200

    @api.post("/signups")
    def sign_up() -> tuple[Any, int]:
        """Start a choreographed sign-up: passed on, as it came, to the entry service's /signups."""
        json_object()  # a JSON object, or 4xx here; passed on as the bytes it came as
        try:
            answer = session.post(f"{settings.entry_url}/signups", data=request.get_data(), timeout=10,
                                  headers={"Content-Type": "application/json"},
                                  params=list(request.args.items(multi=True)))
        except requests.RequestException:
            raise ApiError(503, "entry_unreachable", f"service {ENTRY.upper()} does not answer",
                           headers={"Retry-After": "1"}) from None
        status = answer.status_code
        if status == 202:  # listed at once, so that the page can follow it from the start
            observer.expect(answer.json()["saga_id"])
        passed_on = Response(answer.content, status, content_type="application/json")
        if "Retry-After" in answer.headers:
            passed_on.headers["Retry-After"] = answer.headers["Retry-After"]
        return passed_on, status

    @api.get("/sagas")
    def list_sagas() -> Any:
        """The newest choreographed sagas first; `?limit=`, `?status=`."""
        reject_unknown(request.args, ("limit", "status"), what="query_argument")
        status = request.args.get("status")
        if status is not None and status not in SagaStatus.__members__:
            raise ApiError(400, "invalid_status",
                           f"status must be one of {', '.join(SagaStatus.__members__)}")
        found = observer.recent(limit_arg(request.args), SagaStatus(status) if status else None)
        return jsonify({"sagas": found})

    @api.get("/sagas/<saga_id>")
    def get_saga(saga_id: str) -> Any:
        """One saga as the observer saw it, every event in the order it happened; with `?wait=S`,
        answered as soon as the saga has finished (or after S seconds, at most 30)."""
        reject_unknown(request.args, ("wait",), what="query_argument")
        wait = whole_number_arg(request.args, "wait", default=0, maximum=MAX_WAIT)
        saga = observer.wait(saga_id, wait) if wait else observer.get(saga_id)
        if saga is None:
            raise ApiError(404, "not_found", f"no choreographed saga {saga_id}")
        return jsonify(saga)

    @api.get("/sagas/<saga_id>/records")
    def saga_records(saga_id: str) -> Any:
        """The rows A, B and C hold for the saga, and whether they agree with how it ended."""
        saga = observer.get(saga_id)
        if saga is None:
            raise ApiError(404, "not_found", f"no choreographed saga {saga_id}")
        held: dict[str, Any] = {}
        try:
            for part in PARTS:
                held[part.step] = rows.record(part.participant, saga_id)
        except Unreachable as error:
            return jsonify({"saga_id": saga_id, "rows": held, "verdict": "unknown",
                            "problems": [f"a service did not answer ({error})"]})
        outcome, problems = verdict(SagaStatus(saga["status"]),
                                    {step: (row or {}).get("status") for step, row in held.items()})
        return jsonify({"saga_id": saga_id, "rows": held, "verdict": outcome, "problems": problems})

    @api.get("/dead-letters")
    def dead_letters() -> Any:
        """Every event that could not be delivered or handled: each service's, and the broker's."""
        found: list[dict[str, Any]] = [*observer.dead_letters(), *dead_letters_elsewhere()]
        unreachable = []
        for service, url in settings.service_urls.items():
            try:
                answer = session.get(f"{url}/dead-letters", timeout=2)
                found += [{**letter, "service": service} for letter in answer.json()["dead_letters"]]
            except (requests.RequestException, ValueError, KeyError):
                unreachable.append(service)
        return jsonify({"dead_letters": found, "unreachable": unreachable})

    @api.get("/flow")
    def flow() -> Any:
        """Who reacts to which event, and what each says next: the saga, as a table."""
        return jsonify({"steps": list(STEPS), "entry": ENTRY, "fields": FIELDS,
                        "reactions": [{"on": w.event, "service": w.service, "does": w.reaction.value,
                                       "then": w.then, "otherwise": w.otherwise} for w in FLOW]})

    return api
