"""What the orchestrator asks participants outside any saga: health, rows, and probes."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception_type,
    retry_if_result,
    stop_after_attempt,
    wait_fixed,
)

from common.consistency import Unreachable
from common.http import CallFailed, Reply
from orchestrator.client import Attempt, ParticipantClient

log = logging.getLogger(__name__)

READ_ATTEMPTS = 3  # a read is idempotent: a slow or lost one is asked again before giving up


class Busy(Exception):
    """A participant answered a read with a 5xx: it may be busy, so it is asked again."""

    def __init__(self, reply: Reply) -> None:
        super().__init__(f"HTTP {reply.status}")
        self.reply = reply


@dataclass(frozen=True)
class Probe:
    """What a throwaway /invoke gave, and the saga id it used."""

    service: str
    saga_id: str
    attempt: Attempt
    undone: bool  # its compensation answered ok (else its row may stay: /consistency lists it)


class ParticipantGateway:
    """Reads from participants and probes them; `urls` maps each service to its base URL,
    `fields` to the input fields its step receives."""

    def __init__(self, client: ParticipantClient, urls: Mapping[str, str],
                 fields: Mapping[str, tuple[str, ...]]) -> None:
        self.client = client
        self.urls = dict(urls)
        self.fields = dict(fields)

    @property
    def services(self) -> tuple[str, ...]:
        return tuple(self.urls)

    def health(self, service: str) -> dict[str, Any]:
        """{"url", "status": "ok" | "unhealthy" | "down", ...} as the service answers."""
        url = self.urls[service]
        try:
            body = self.client.get(f"{url}/health").json()
        except Exception as error:  # noqa: BLE001 - a dead service is an answer here
            return {"url": url, "status": "down", "error": type(error).__name__}
        return {"url": url, **{k: v for k, v in body.items() if k in ("status", "database")}}

    def _read(self, url: str) -> Reply:
        """GET a participant's rows (a 4xx is an answer), asked again if it is slow or busy."""
        for attempt in Retrying(stop=stop_after_attempt(READ_ATTEMPTS), wait=wait_fixed(0.2),
                                retry=retry_if_exception_type((CallFailed, Busy)), reraise=True):
            with attempt:
                reply = self.client.get(url)
                if reply.status >= 500:
                    raise Busy(reply)
        return reply

    def record(self, service: str, saga_id: str) -> dict[str, Any] | None:
        """The service's row for a saga, None if it holds none; Unreachable if it cannot say."""
        try:
            reply = self._read(f"{self.urls[service]}/records/{saga_id}")
        except (CallFailed, Busy) as error:
            raise Unreachable(f"{service}: {error}") from error
        if reply.status == 404:
            return None
        row = reply.json_object()
        if reply.status != 200 or row is None:
            raise Unreachable(f"{service}: HTTP {reply.status}")
        return row

    def knows_signup(self, entry: str, saga_id: str) -> bool:
        """Did the choreography's entry service take in this sign-up? (It records each one first.)"""
        try:
            reply = self.client.get(f"{self.urls[entry]}/signups/{saga_id}")
        except CallFailed as error:
            raise Unreachable(f"{entry}: {error}") from error
        return reply.status == 200

    def records_between(self, service: str, after: str, until: str | None,
                        page_size: int = 1000) -> Iterator[dict[str, Any]]:
        """The rows the service holds for saga ids after `after` up to `until` (None: no end),
        in the order of their saga ids, read in pages."""
        params = {"saga_after": after, "limit": str(page_size)}
        if until is not None:
            params["saga_until"] = until
        while True:
            try:
                reply = self._read(f"{self.urls[service]}/records?{urlencode(params)}")
                if reply.status != 200:  # a 404 here is not an answer
                    raise Unreachable(f"{service}: HTTP {reply.status}")
                page: list[dict[str, Any]] = reply.json()["records"]
            except (CallFailed, Busy, ValueError, KeyError) as error:
                raise Unreachable(f"{service}: {error}") from error
            yield from page
            if len(page) < page_size:
                return
            params["saga_after"] = page[-1]["saga_id"]

    def probe(self, service: str, fault: str | None, timeout: float) -> Probe:
        """An /invoke on a throwaway saga id, compensated at once (`Probe.undone`: it was)."""
        url = self.urls[service]
        saga_id = f"probe-{uuid.uuid4().hex}"
        payload: dict[str, Any] = {"saga_id": saga_id,
                                   **dict.fromkeys(self.fields.get(service, ()), "probe")}
        probe = self.client.attempt(f"{url}/invoke", payload, number=1, timeout=timeout, fault=fault)
        # Undo it even if the invoke seemed to fail (it may have committed): a few tries.
        numbers = iter(range(1, 4))
        undo: Attempt = Retrying(stop=stop_after_attempt(3), wait=wait_fixed(0.1), reraise=True,
                                 retry=retry_if_result(lambda attempt: attempt.outcome != "ok"),
                                 retry_error_callback=_last_answer)(
            lambda: self.client.attempt(f"{url}/compensate", {"saga_id": saga_id},
                                        number=next(numbers), timeout=timeout))
        if undo.outcome != "ok":
            log.warning("probe %s at %s could not be undone (%s): its row may stay; /consistency lists "
                        "it", saga_id, service, undo.error or undo.outcome)
        return Probe(service, saga_id, probe, undone=undo.outcome == "ok")


def _last_answer(state: RetryCallState) -> Any:
    """When the tries run out: the last answer (not an error)."""
    assert state.outcome is not None
    return state.outcome.result()
