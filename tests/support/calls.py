"""Calling the system as its clients and the orchestrator do: starting sagas both ways, calling a
participant directly, and waiting until a saga is where a test wants it."""

from __future__ import annotations

from typing import Any

import requests
from tenacity import Retrying, stop_after_delay, wait_fixed

from scripts.stack import Stack
from tests.support.people import FIELDS, fresh_user, fresh_value

INVOKE_ATTEMPTS = 3  # CALL_RETRIES=2 in the test settings
COMPENSATE_ATTEMPTS = 4  # COMPENSATION_RETRIES=3
FINISHED = ("COMPLETED", "COMPENSATED", "COMPENSATION_FAILED")


# The orchestrated saga ---------------------------------------------------------------------------

def start(stack: Stack, user: dict[str, str], **fail: str) -> requests.Response:
    """POST /start and wait for the saga's end."""
    body: dict[str, Any] = dict(user)
    if fail:
        body["fail"] = fail
    return requests.post(f"{stack.urls['orchestrator']}/start", json=body, timeout=60)


def start_async(stack: Stack, **fail: str) -> str:
    """POST /start for a fresh user with Prefer: respond-async; the saga's id."""
    body = {**fresh_user(), "fail": fail}
    answer = requests.post(f"{stack.urls['orchestrator']}/start", json=body,
                           headers={"Prefer": "respond-async"}, timeout=10)
    assert answer.status_code == 202, answer.text
    return str(answer.json()["saga_id"])


def wait_for_saga(stack: Stack, saga_id: str, status: str | tuple[str, ...], current_step: int | None = None,
                  seconds: float = 30) -> dict[str, Any]:
    """Poll the saga log itself (not the API: the orchestrator may be dead) until it matches
    (its status `status`, or one of them)."""
    statuses = (status,) if isinstance(status, str) else status
    for attempt in Retrying(stop=stop_after_delay(seconds), wait=wait_fixed(0.01), reraise=True):
        with attempt:
            row = stack.saga_row(saga_id)
            assert row is not None and row["status"] in statuses, row
            assert current_step is None or row["current_step"] == current_step, row
    return row


def invoke(stack: Stack, service: str, saga_id: str, value: str | None = None,
           **headers: str) -> requests.Response:
    """A participant's /invoke, called directly (signed, as the orchestrator calls it), with a
    fresh value unless given: a test that repeats a saga id passes the value again."""
    body = {"saga_id": saga_id, FIELDS[service]: fresh_value(service) if value is None else value}
    return stack.signed_post(service, "/invoke", body, **headers)


def compensate(stack: Stack, service: str, saga_id: str, action: str = "compensate") -> requests.Response:
    """A participant's /compensate (or /cancel), called directly (signed)."""
    return stack.signed_post(service, f"/{action}", {"saga_id": saga_id})


# The choreographed saga --------------------------------------------------------------------------

def sign_up(stack: Stack, user: dict[str, str] | None = None, **fail: str) -> str:
    """POST /signups at A (202 at once), for a fresh user unless given; the saga's id."""
    body: dict[str, Any] = {**(user or fresh_user()), **({"fail": fail} if fail else {})}
    answer = requests.post(f"{stack.urls['a']}/signups", json=body, timeout=30)
    assert answer.status_code == 202, answer.text
    assert answer.json()["status"] == "RUNNING"
    return str(answer.json()["saga_id"])


def choreographed(stack: Stack, saga_id: str, seconds: float = 30,
                  statuses: tuple[str, ...] = FINISHED, events: int = 0) -> dict[str, Any]:
    """The saga as the observer tells it, once its status is one of `statuses` and it has seen
    at least `events` events (each service's relay tells it in its own time, so the event that
    ends a saga may come before one that happened earlier)."""
    for attempt in Retrying(stop=stop_after_delay(seconds), wait=wait_fixed(0.05), reraise=True):
        with attempt:
            answer = requests.get(f"{stack.urls['orchestrator']}/choreography/sagas/{saga_id}",
                                  params={"wait": 2} if statuses == FINISHED else {}, timeout=10)
            assert answer.status_code == 200, answer.text
            saga = answer.json()
            assert saga["status"] in statuses and len(saga["events"]) >= events, saga
    return saga  # type: ignore[no-any-return]


def event_types(saga: dict[str, Any]) -> list[str]:
    return [event["type"] for event in saga["events"]]
