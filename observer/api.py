"""The observer's HTTP API, served beside the dashboard: /choreography/...

Events come in (signed) at POST /choreography/events over the embedded transport; the
sagas, their events, their rows, the dead letters and the flow go out to the dashboard and
to curl. POST /choreography/signups passes a sign-up on to the entry service, so that the
dashboard (which talks to its own origin only) can start one; it is a client of the saga,
not a part of it.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from flask import Blueprint, Response, jsonify, request

from choreography.flow import Flows
from common.consistency import RowReader, Unreachable
from common.errors import ApiError, json_body, json_object
from common.http import CallFailed, Http, Reply
from common.reads import saga_reads
from common.validation import reject_unknown, whole_number_arg
from common.web import kept, refuse_cross_site_reads, require_signature, require_signature_or_dashboard
from messaging.events import event_id_field
from messaging.transport import take_in
from observer.consistency import ChoreographedSagas
from observer.observer import Observer

log = logging.getLogger(__name__)

MAX_WAIT = 30  # seconds a reader may ask to wait for a saga to finish
UNKNOWN_AFTER = 0.3  # seconds a ?wait= waits for the first event of a saga the observer has not seen


@dataclass(frozen=True)
class Observing:
    """What the observer's handlers reach, built once by the app that hosts it."""

    observer: Observer
    flows: Flows
    sagas: ChoreographedSagas  # the observer as a source of sagas (the reads, /consistency)
    rows: RowReader  # the participants' rows
    http: Http  # the process's calls to the services (signed with its secret)
    secret: str
    service_urls: dict[str, str]  # where sign-ups enter, and the services' dead letters
    knows_signup: Callable[[str], bool]  # did the entry service take in this sign-up?
    # Readers that may wait (?wait=) at once: each holds a thread, and the events that end the
    # saga it waits for come in on the same threads (WAIT_SLOTS).
    waits: threading.BoundedSemaphore

    @property
    def entry_url(self) -> str:
        return self.service_urls[self.flows.default.entry]


def observing() -> Observing:
    return kept(Observing)


api = Blueprint("observer", __name__, url_prefix="/choreography")
reads = saga_reads("observer_reads", "/choreography", lambda: observing().sagas, lambda: observing().rows)
BLUEPRINTS = (api, reads)


def signed_post(service: str, path: str, payload: dict[str, Any]) -> Reply:
    try:
        return observing().http.post_json(f"{observing().service_urls[service]}{path}", payload, timeout=5)
    except CallFailed:
        raise ApiError(503, "service_unreachable", f"service {service} does not answer",
                       headers={"Retry-After": "1"}) from None


@api.post("/events")
def receive() -> tuple[Any, int]:
    """An event from a service's relay (signed): recorded once; a repeat changes nothing."""
    require_signature(observing().secret)
    answer, status = take_in(json_body(), observing().flows.routes, observing().observer.receive_all,
                             "observer")
    return jsonify(answer), status


@api.post("/signups")
def sign_up() -> tuple[Any, int]:
    """Start a choreographed sign-up: passed on, as it came, to the entry service's /signups."""
    json_object()  # a JSON object, or 4xx here; passed on as the bytes it came as
    query = urlencode(list(request.args.items(multi=True)))
    try:
        answer = observing().http.post(f"{observing().entry_url}/signups{'?' + query if query else ''}",
                           request.get_data(), timeout=10, signed=False)
    except CallFailed:
        entry = observing().flows.default.entry.upper()
        raise ApiError(503, "entry_unreachable", f"service {entry} does not answer",
                       headers={"Retry-After": "1"}) from None
    status = answer.status
    if status == 202:  # listed at once, so that the page can follow it from the start
        observing().observer.expect(answer.json()["saga_id"])
    passed_on = Response(answer.data, status, content_type="application/json")
    if "Retry-After" in answer.headers:
        passed_on.headers["Retry-After"] = answer.headers["Retry-After"]
    return passed_on, status


@api.get("/sagas/<saga_id>")
def get_saga(saga_id: str) -> Any:
    """One saga as the observer saw it, every event in the order it happened; with `?wait=S`,
    answered as soon as the saga has finished (or after S seconds, at most 30). A wait asked
    while every slot for waiting readers is taken is answered at once, as `wait=0` is, with
    `Retry-After: 1`: readers holding every thread would leave none for the events they wait for."""
    reject_unknown(request.args, ("wait",), what="query_argument")
    wait = whole_number_arg(request.args, "wait", default=0, maximum=MAX_WAIT)
    if wait:
        refuse_cross_site_reads()  # a page elsewhere must not hold this process's threads
    waits = observing().waits
    waiting = bool(wait) and waits.acquire(blocking=False)
    try:
        if not waiting:
            saga = observing().observer.get(saga_id)
        else:
            # Wait only for a saga someone knows: a sign-up taken in a moment ago, whose first
            # event comes within a fraction of a second, or one the entry service says it took.
            saga = observing().observer.wait(saga_id, wait, unknown_after=UNKNOWN_AFTER)
            if saga is None and _entry_knows(saga_id):
                saga = observing().observer.wait(saga_id, wait)
    finally:
        if waiting:
            waits.release()
    busy = {"Retry-After": "1"} if wait and not waiting else {}
    if saga is None:
        raise ApiError(404, "not_found", f"no choreographed saga {saga_id}", headers=busy)
    return jsonify(saga), 200, busy


def _entry_knows(saga_id: str) -> bool:
    try:
        return observing().knows_signup(saga_id)
    except Unreachable:
        return False


@api.post("/dead-letters/redrive")
def redrive() -> tuple[Any, int]:
    """Send or handle a dead-lettered event again (the dashboard's button, or a signed call):
    `{"where": "outbox" | "inbox", "service", "event_id"}`, or `{"where": "broker", "id"}` for
    a letter of the broker's, which its owner publishes again (a forgery has no owner to).
    Idempotent: what is no longer dead-lettered changes nothing."""
    require_signature_or_dashboard(observing().secret)
    body = json_object()
    where = body.get("where")
    if where == "broker":
        reject_unknown(body, ("where", "id"))
        letter_id = body.get("id")
        if not isinstance(letter_id, int) or isinstance(letter_id, bool) or letter_id < 1:
            raise ApiError(400, "invalid_field", "'id' must be a dead letter's id")
        letter = observing().observer.dead_letter(letter_id)
        if letter is None:
            raise ApiError(404, "not_found", f"no dead letter {letter_id}")
        owner = observing().flows.sources.get(letter["type"] or "")
        if letter["event_id"] is None or owner is None:
            raise ApiError(409, "not_an_event", "this dead letter holds no event of the saga's: "
                           "nothing can send it again")
        if letter["redriven_at"] is not None:
            return jsonify({"where": where, "id": letter_id, "service": owner,
                            "event_id": letter["event_id"], "redriven": 0}), 200
        answer = signed_post(owner, "/dead-letters/redrive",
                             {"where": "broker", "event_id": letter["event_id"]})
        if answer.status == 404:
            raise ApiError(409, "not_published_by_its_owner",
                           f"service {owner} never published event {letter['event_id']}: a forgery "
                           "is never sent again")
        if answer.status != 200:
            raise ApiError(503, "service_unavailable", f"service {owner} answered {answer.status}",
                           headers={"Retry-After": "1"})
        observing().observer.mark_redriven(letter_id)
        return jsonify({"where": where, "id": letter_id, "service": owner,
                        "event_id": letter["event_id"], "redriven": answer.json()["redriven"]}), 200
    reject_unknown(body, ("where", "service", "event_id"))
    if not isinstance(where, str) or where not in ("outbox", "inbox"):
        raise ApiError(400, "invalid_field", "'where' must be outbox, inbox or broker")
    service = body.get("service")
    if not isinstance(service, str) or service not in observing().service_urls:
        raise ApiError(400, "invalid_field",
                       f"'service' must be one of {', '.join(observing().service_urls)}")
    event_id = event_id_field(body)
    answer = signed_post(service, "/dead-letters/redrive", {"where": where, "event_id": event_id})
    if answer.status >= 500:
        raise ApiError(503, "service_unavailable", f"service {service} answered {answer.status}",
                       headers={"Retry-After": "1"})
    passed_on = Response(answer.data, answer.status, content_type="application/json")
    return passed_on, answer.status


@api.get("/dead-letters")
def dead_letters() -> Any:
    """Every event that could not be delivered or handled: each service's, and the broker's."""
    found: list[dict[str, Any]] = [*observing().observer.dead_letters()]
    unreachable = []
    for service, url in observing().service_urls.items():
        try:
            answer = observing().http.get(f"{url}/dead-letters", timeout=2)
            found += [{**letter, "service": service} for letter in answer.json()["dead_letters"]]
        except (CallFailed, ValueError, KeyError, TypeError):
            unreachable.append(service)
    return jsonify({"dead_letters": found, "unreachable": unreachable})


@api.get("/flow")
def flow() -> Any:
    """Who reacts to which event, and what each says next: the saga, as a table."""
    flow = observing().flows.default
    return jsonify({"steps": list(flow.steps), "entry": flow.entry, "fields": flow.fields,
                    "definition": flow.key,
                    "reactions": [{"on": w.event, "service": w.service, "does": w.reaction.value,
                                   "then": w.then, "otherwise": w.otherwise} for w in flow.reactions]})
