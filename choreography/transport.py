"""How an event leaves a service: where it goes, and the embedded transport (HTTP).

An event goes to every service that reacts to it (flow.py) and to the observer. Over HTTP
each destination is a signed POST; over RabbitMQ (rabbitmq.py) there is one destination,
the broker, whose bindings do the fan-out.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Protocol

import requests
from requests.adapters import HTTPAdapter

from common.signing import SIGNATURE_HEADER, sign

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

    def __init__(self, urls: dict[str, str], secret: str, timeout: float = 5.0) -> None:
        self.urls = urls  # service name (and "observer") -> base URL
        self.secret = secret
        self.timeout = timeout
        self._local = threading.local()

    def destinations(self, subscribers: tuple[str, ...]) -> list[str]:
        return [*subscribers, OBSERVER]

    def _session(self) -> requests.Session:
        session = getattr(self._local, "session", None)
        if session is None:
            session = requests.Session()
            session.trust_env = False
            session.mount("http://", HTTPAdapter(pool_connections=8, pool_maxsize=2))
            self._local.session = session
        return session

    def deliver(self, destination: str, envelope: str) -> Delivery:
        path = OBSERVER_PATH if destination == OBSERVER else EVENTS_PATH
        body = envelope.encode()
        headers = {"Content-Type": "application/json",
                   SIGNATURE_HEADER: sign(self.secret, "POST", path, body)}
        try:
            answer = self._session().post(f"{self.urls[destination]}{path}", data=body,
                                          headers=headers, timeout=self.timeout)
        except requests.RequestException as error:
            return Delivery(False, error=f"{type(error).__name__}: {error}")
        if answer.status_code < 300:
            return Delivery(True)
        retryable = answer.status_code >= 500 or answer.status_code in (408, 429)
        return Delivery(False, permanent=not retryable,
                        error=f"HTTP {answer.status_code}: {answer.text[:300]}")

    def close(self) -> None:
        return None
