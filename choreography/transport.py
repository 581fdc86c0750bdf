"""How an event leaves a service: where it goes, and the embedded transport (HTTP).

An event goes to every service that reacts to it (flow.py) and to the observer. Over HTTP
each destination is a signed POST; over RabbitMQ (rabbitmq.py) there is one destination,
the broker, whose bindings do the fan-out.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from common.http import CallFailed, Http

OBSERVER = "observer"
EVENTS_PATH = "/events"
OBSERVER_PATH = "/choreography/events"


@dataclass(frozen=True)
class Delivery:
    """What became of one attempt to hand an event to a destination."""

    ok: bool
    permanent: bool = False  # it can never be delivered (refused as malformed or unsigned)
    error: str | None = None


class Transport(Protocol):
    def destinations(self, subscribers: tuple[str, ...]) -> list[str]: ...

    def deliver(self, destination: str, envelope: str) -> Delivery: ...

    def close(self) -> None: ...


class HttpTransport:
    """The embedded transport: no server; each relay POSTs its events to their subscribers."""

    def __init__(self, urls: dict[str, str], http: Http, timeout: float = 5.0) -> None:
        self.urls = urls  # service name (and "observer") -> base URL
        self.http = http
        self.timeout = timeout

    def destinations(self, subscribers: tuple[str, ...]) -> list[str]:
        return [*subscribers, OBSERVER]

    def deliver(self, destination: str, envelope: str) -> Delivery:
        path = OBSERVER_PATH if destination == OBSERVER else EVENTS_PATH
        try:
            reply = self.http.post(f"{self.urls[destination]}{path}", envelope.encode(), self.timeout)
        except CallFailed as error:
            return Delivery(False, error=str(error))
        if reply.status < 300:
            return Delivery(True)
        retryable = reply.status >= 500 or reply.status in (408, 429)
        return Delivery(False, permanent=not retryable, error=f"HTTP {reply.status}: {reply.text[:300]}")

    def close(self) -> None:
        return None
