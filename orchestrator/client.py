"""Calls to participants: one attempt per call, over the process's kept-alive connections.

Retrying is the engine's business (it decides which attempt is the last); this module
only makes an attempt and says what came of it.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

from common.faults import ATTEMPT_HEADER, FAULT_HEADER, TIMEOUT_HEADER
from common.http import CallFailed, CallTimedOut, Http, Reply
from common.tracing import inject

RETRYABLE = frozenset({"error", "timeout", "unreachable"})


@dataclass(frozen=True)
class Attempt:
    """What one HTTP attempt gave."""

    number: int
    http_status: int | None
    outcome: str  # ok, error (5xx), timeout, unreachable, rejected (4xx), locked (409: wait, then ask again)
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
        self.http = Http(secret)
        self.read_timeout = read_timeout

    def get(self, url: str) -> Reply:
        """A plain GET with the read timeout: reads are quick or the service is in trouble.
        CallFailed (or CallTimedOut) when no answer comes."""
        return self.http.get(url, self.read_timeout)

    def attempt(self, url: str, payload: dict[str, Any], *, number: int, timeout: float,
                fault: str | None = None) -> Attempt:
        """POST once, with `timeout` seconds for the answer; never raises for what the call gave."""
        body = json.dumps(payload, separators=(",", ":")).encode()
        headers = {ATTEMPT_HEADER: str(number), TIMEOUT_HEADER: f"{timeout:g}"}
        if fault:
            headers[FAULT_HEADER] = fault
        inject(headers)  # the trace context: the participant's span is a child of this attempt's
        started = time.perf_counter()

        def elapsed_ms() -> int:
            return round((time.perf_counter() - started) * 1000)

        try:  # the headers the participant obeys are signed with the body
            reply = self.http.post(url, body, timeout, headers=headers)
        except CallTimedOut as error:
            return Attempt(number, None, "timeout", elapsed_ms(), str(error), None)
        except CallFailed as error:
            return Attempt(number, None, "unreachable", elapsed_ms(), str(error), None)
        answer = reply.json_object()
        code = reply.status
        if code < 300:
            return Attempt(number, code, "ok", elapsed_ms(), None, answer)
        outcome = "rejected" if code < 500 else "error"
        message = None
        if answer is not None and isinstance(answer.get("error"), dict):
            message = answer["error"].get("message")
            if code == 409 and answer["error"].get("code") == "locked":  # another saga's semantic lock
                outcome = "locked"
        return Attempt(number, code, outcome, elapsed_ms(), message or f"HTTP {code}: {reply.text[:200]}",
                       answer)
