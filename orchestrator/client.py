"""Calls to participants: one pooled session per thread, a timeout, tenacity retries."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import requests
from requests.adapters import HTTPAdapter
from tenacity import RetryCallState, Retrying, retry_if_result, stop_after_attempt, wait_exponential_jitter

from common.faults import ATTEMPT_HEADER, FAULT_HEADER, TIMEOUT_HEADER


@dataclass(frozen=True)
class Attempt:
    """What one HTTP attempt gave."""

    number: int
    http_status: int | None
    outcome: str  # ok, error (5xx), timeout, unreachable, rejected (4xx: never retried)
    latency_ms: int
    error: str | None
    body: dict[str, Any] | None

    @property
    def retryable(self) -> bool:
        return self.outcome in ("error", "timeout", "unreachable")


def _last_attempt(state: RetryCallState) -> Attempt:
    """When retries run out, answer with the last attempt instead of raising."""
    assert state.outcome is not None
    return state.outcome.result()  # type: ignore[no-any-return]


class ParticipantClient:
    """POSTs to a participant, retrying 5xx, timeouts and connection errors, never 4xx."""

    def __init__(self, timeout: float, backoff_initial: float, backoff_max: float) -> None:
        self.timeout = timeout
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
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
        """A plain GET with the call timeout (capped at 2 s: it only reads)."""
        return self._session().get(url, timeout=min(self.timeout, 2.0))

    def post(self, url: str, payload: dict[str, Any], *, retries: int, first_attempt: int = 1,
             fault: str | None = None,
             on_attempt: Callable[[Attempt], None] = lambda attempt: None) -> Attempt:
        """POST with up to `retries` retries; every attempt goes to `on_attempt`; the last is returned."""
        numbers = iter(range(first_attempt, first_attempt + retries + 1))

        def attempt_once() -> Attempt:
            attempt = self._attempt(url, payload, next(numbers), fault)
            on_attempt(attempt)
            return attempt

        retrying = Retrying(
            stop=stop_after_attempt(retries + 1),
            wait=wait_exponential_jitter(initial=self.backoff_initial, max=self.backoff_max),
            retry=retry_if_result(lambda attempt: attempt.retryable),
            retry_error_callback=_last_attempt,
        )
        return retrying(attempt_once)

    def _attempt(self, url: str, payload: dict[str, Any], number: int,
                 fault: str | None) -> Attempt:
        headers = {ATTEMPT_HEADER: str(number), TIMEOUT_HEADER: str(self.timeout)}
        if fault:
            headers[FAULT_HEADER] = fault
        started = time.perf_counter()

        def elapsed_ms() -> int:
            return round((time.perf_counter() - started) * 1000)

        try:
            response = self._session().post(url, json=payload, headers=headers,
                                            timeout=self.timeout)
        except requests.Timeout:
            return Attempt(number, None, "timeout", elapsed_ms(),
                           f"no answer within {self.timeout:g} s", None)
        except requests.RequestException as error:
            return Attempt(number, None, "unreachable", elapsed_ms(),
                           f"{type(error).__name__}: {error}", None)
        try:
            body = response.json()
        except ValueError:
            body = None
        code = response.status_code
        if code < 300:
            return Attempt(number, code, "ok", elapsed_ms(), None, body)
        outcome = "rejected" if code < 500 else "error"
        message = None
        if isinstance(body, dict) and isinstance(body.get("error"), dict):
            message = body["error"].get("message")
        return Attempt(number, code, outcome, elapsed_ms(),
                       message or f"HTTP {code}: {response.text[:200]}", body)
