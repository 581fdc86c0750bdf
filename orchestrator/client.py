"""Calls to participants: one attempt per call, over a kept-alive connection per thread.

Retrying is the engine's business (it decides which attempt is the last); this module
only makes an attempt and says what came of it.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import requests
from requests.adapters import HTTPAdapter

from common.faults import ATTEMPT_HEADER, FAULT_HEADER, TIMEOUT_HEADER
from common.signing import SIGNATURE_HEADER, sign
from common.tracing import inject

RETRYABLE = frozenset({"error", "timeout", "unreachable"})


@dataclass(frozen=True)
class Attempt:
    """What one HTTP attempt gave."""

    number: int
    http_status: int | None
    outcome: str  # ok, error (5xx), timeout, unreachable, rejected (4xx)
    latency_ms: int
    error: str | None
    body: dict[str, Any] | None

    @property
    def retryable(self) -> bool:
        """Could another attempt give another answer? A 4xx would not: it is never retried."""
        return self.outcome in RETRYABLE


class ParticipantClient:
    """POSTs to participants (signed with the shared secret) and GETs from them, one attempt
    at a time."""

    def __init__(self, secret: str, read_timeout: float = 2.0) -> None:
        self.secret = secret
        self.read_timeout = read_timeout
        self._local = threading.local()

    def _session(self) -> requests.Session:
        session = getattr(self._local, "session", None)
        if session is None:
            session = requests.Session()
            session.trust_env = False  # no proxy or netrc look-ups per call: these are local calls
            # One thread makes one call at a time: one kept-alive connection per service.
            adapter = HTTPAdapter(pool_connections=4, pool_maxsize=1)
            session.mount("http://", adapter)
            session.mount("https://", adapter)
            self._local.session = session
        return session

    def get(self, url: str) -> requests.Response:
        """A plain GET with the read timeout: reads are quick or the service is in trouble."""
        return self._session().get(url, timeout=self.read_timeout)

    def attempt(self, url: str, payload: dict[str, Any], *, number: int, timeout: float,
                fault: str | None = None) -> Attempt:
        """POST once, with `timeout` seconds for the answer; never raises for what the call gave."""
        body = json.dumps(payload, separators=(",", ":")).encode()
        headers = {"Content-Type": "application/json", ATTEMPT_HEADER: str(number),
                   TIMEOUT_HEADER: f"{timeout:g}"}
        if fault:
            headers[FAULT_HEADER] = fault
        # The headers the participant obeys are signed with the body.
        headers[SIGNATURE_HEADER] = sign(self.secret, "POST", urlsplit(url).path, body, headers=headers)
        inject(headers)  # the trace context: the participant's span is a child of this attempt's
        started = time.perf_counter()

        def elapsed_ms() -> int:
            return round((time.perf_counter() - started) * 1000)

        try:
            response = self._session().post(url, data=body, headers=headers, timeout=timeout)
        except requests.Timeout:
            return Attempt(number, None, "timeout", elapsed_ms(), f"no answer within {timeout:g} s", None)
        except requests.RequestException as error:
            return Attempt(number, None, "unreachable", elapsed_ms(),
                           f"{type(error).__name__}: {error}", None)
        try:
            answer = response.json()
        except ValueError:
            answer = None
        answer = answer if isinstance(answer, dict) else None
        code = response.status_code
        if code < 300:
            return Attempt(number, code, "ok", elapsed_ms(), None, answer)
        outcome = "rejected" if code < 500 else "error"
        message = None
        if answer is not None and isinstance(answer.get("error"), dict):
            message = answer["error"].get("message")
        return Attempt(number, code, outcome, elapsed_ms(),
                       message or f"HTTP {code}: {response.text[:200]}", answer)
