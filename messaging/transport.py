"""How an event leaves a service: where it goes, and the embedded transport (HTTP).

An event goes to every service that reacts to it (flow.py) and to the observer. Over HTTP
each destination is a signed POST; over RabbitMQ (rabbitmq.py) there is one destination,
the broker, whose bindings do the fan-out.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from common.errors import ApiError
from common.http import CallFailed, Http
from common.metrics import EVENTS_REFUSED
from messaging.events import Envelope, Refused
from messaging.routes import Routes

log = logging.getLogger(__name__)

OBSERVER = "observer"
EVENTS_PATH = "/events"
OBSERVER_PATH = "/choreography/events"
MAX_BATCH = 500  # events in one delivery over HTTP


@dataclass(frozen=True)
class Delivery:
    """What became of one attempt to hand an event to a destination."""

    ok: bool
    permanent: bool = False  # it can never be delivered (refused as malformed or unsigned)
    error: str | None = None


class Transport(Protocol):
    def destinations(self, subscribers: tuple[str, ...]) -> list[str]: ...

    def deliver(self, destination: str, envelopes: list[str]) -> list[Delivery]:
        """Hand a batch of events to a destination; what became of each."""
        ...

    def close(self) -> None: ...


class HttpTransport:
    """The embedded transport: no server; each relay POSTs its events to their subscribers, a
    batch (a JSON array) in one signed call (or several, to fit the receiver's body limit), and
    the receiver says what it did with each."""

    def __init__(self, urls: dict[str, str], http: Http, max_body: int, timeout: float = 5.0) -> None:
        self.urls = urls  # service name (and "observer") -> base URL
        self.http = http
        self.max_body = max_body  # the bytes a receiver takes in one request (MAX_BODY_BYTES)
        self.timeout = timeout

    def destinations(self, subscribers: tuple[str, ...]) -> list[str]:
        return [*subscribers, OBSERVER]

    def deliver(self, destination: str, envelopes: list[str]) -> list[Delivery]:
        """The batch in as few POSTs as fit the receiver's body limit, one after the other; once
        one gets no answer (or only a failure to try again), the rest are not sent this time:
        each would wait as long."""
        url = f"{self.urls[destination]}{OBSERVER_PATH if destination == OBSERVER else EVENTS_PATH}"
        deliveries: list[Delivery] = []
        parts = _parts([e.encode() for e in envelopes], self.max_body)
        for index, part in enumerate(parts):
            answered = self._post(url, part)
            deliveries += answered
            if not any(delivery.ok or delivery.permanent for delivery in answered):
                left = sum(len(later) for later in parts[index + 1:])
                deliveries += [Delivery(False, error=f"not sent: {answered[0].error}")] * left
                break
        return deliveries

    def _post(self, url: str, envelopes: list[bytes]) -> list[Delivery]:
        body = b"[" + b",".join(envelopes) + b"]"
        try:
            reply = self.http.post(url, body, self.timeout)
        except CallFailed as error:
            return [Delivery(False, error=str(error))] * len(envelopes)
        if reply.status == 413 and len(envelopes) > 1:  # it takes less at once than ours says: halve it
            half = len(envelopes) // 2
            return self._post(url, envelopes[:half]) + self._post(url, envelopes[half:])
        answer = reply.json_object() if reply.status < 300 else None
        results = answer.get("results") if answer else None
        if isinstance(results, list) and len(results) == len(envelopes):
            return [Delivery(True) if isinstance(r, dict) and r.get("status") in ("received", "duplicate")
                    else Delivery(False, permanent=True, error=f"refused: {(r or {}).get('error')}")
                    for r in results]
        retryable = reply.status >= 500 or reply.status in (408, 429) or reply.status < 300
        return [Delivery(False, permanent=not retryable,
                         error=f"HTTP {reply.status}: {reply.text[:300]}")] * len(envelopes)

    def close(self) -> None:
        return None


def _parts(envelopes: list[bytes], most: int) -> list[list[bytes]]:
    """The envelopes, in order, in runs whose JSON array is at most `most` bytes (one that is
    larger alone goes alone: its receiver refuses it, for good)."""
    parts: list[list[bytes]] = []
    size = most + 1
    for envelope in envelopes:
        if size + 1 + len(envelope) > most:  # "," and the envelope would not fit: a new run
            parts.append([])
            size = 1  # "]" (and "[" in place of the first ",")
        parts[-1].append(envelope)
        size += 1 + len(envelope)
    return parts


Received = Callable[[list[Envelope]], "list[bool] | list[bool | Refused]"]


def take_in(body: Any, routes: Routes, receive: Received, service: str) -> tuple[dict[str, Any], int]:
    """The receiving side of the embedded transport: a POSTed event (an object) or a batch of
    them (an array), each checked (an event of `routes`, from its owner), the good ones taken in
    by `receive` in one go (True: new, False: a repeat, or why it refused one). One event answers
    `{"event_id", "status"}`, or 400 if refused; a batch answers `{"results": [...]}`, one for
    each, in order (`received`, `duplicate`, or `refused` with the reason: the sender
    dead-letters those and marks the others delivered)."""
    batch = isinstance(body, list)
    items = body if batch else [body]
    if batch and not 1 <= len(items) <= MAX_BATCH:
        raise ApiError(400, "invalid_json", f"a batch holds 1 to {MAX_BATCH} events")
    results: list[dict[str, Any]] = []
    taken: list[Envelope] = []

    def refused(item: Any, error: Refused) -> dict[str, Any]:
        EVENTS_REFUSED.labels(service, error.kind).inc()
        log.warning("%s refused an event: %s", service, error)
        if not batch:
            raise ApiError(400, "bad_event", str(error))
        event_id = item.get("event_id") if isinstance(item, dict) else None
        return {"event_id": event_id if isinstance(event_id, str) else None, "status": "refused",
                "error": str(error)}

    for item in items:
        try:
            envelope = Envelope.from_json(item, routes.types, routes.sources)
        except Refused as error:
            results.append(refused(item, error))
            continue
        taken.append(envelope)
        results.append({"event_id": envelope.event_id, "status": None})
    outcomes = iter(receive(taken) if taken else [])
    for index, result in enumerate(results):
        if result["status"] is None:
            outcome = next(outcomes)
            if isinstance(outcome, Refused):
                results[index] = refused({"event_id": result["event_id"]}, outcome)
            else:
                result["status"] = "received" if outcome else "duplicate"
    return ({"results": results} if batch else results[0]), 200
