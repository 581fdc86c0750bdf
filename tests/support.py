"""What the tests share: the database they run on, starting sagas, waiting, reading answers."""

from __future__ import annotations

import os
from typing import Any

import requests
from tenacity import Retrying, stop_after_delay, wait_fixed

from orchestrator.client import Attempt
from scripts.stack import Stack

TEST_DATABASE_URL = os.environ.get("TEST_DATABASE_URL") or None

INVOKE_ATTEMPTS = 3  # CALL_RETRIES=2 in the test settings
COMPENSATE_ATTEMPTS = 4  # COMPENSATION_RETRIES=3
USER = {"username": "ada", "address": "1 Main St", "payment": "visa"}
FIELDS = {"a": "username", "b": "address", "c": "payment"}


def start(stack: Stack, user: dict[str, str], **fail: str) -> requests.Response:
    """POST /start and wait for the saga's end."""
    body: dict[str, Any] = dict(user)
    if fail:
        body["fail"] = fail
    return requests.post(f"{stack.urls['orchestrator']}/start", json=body, timeout=60)


def start_async(stack: Stack, **fail: str) -> str:
    """POST /start with Prefer: respond-async; the saga's id."""
    body = {**USER, "fail": fail}
    answer = requests.post(f"{stack.urls['orchestrator']}/start", json=body,
                           headers={"Prefer": "respond-async"}, timeout=10)
    assert answer.status_code == 202, answer.text
    return str(answer.json()["saga_id"])


def wait_for_saga(stack: Stack, saga_id: str, status: str, current_step: int | None = None,
                  seconds: float = 30) -> dict[str, Any]:
    """Poll the saga log itself (not the API: the orchestrator may be dead) until it matches."""
    for attempt in Retrying(stop=stop_after_delay(seconds), wait=wait_fixed(0.01), reraise=True):
        with attempt:
            row = stack.saga_row(saga_id)
            assert row is not None and row["status"] == status, row
            assert current_step is None or row["current_step"] == current_step, row
    return row


def assert_rows(stack: Stack, saga_id: str, user: dict[str, str], expected: dict[str, str | None]) -> None:
    """Each participant's row for the saga has the expected status (None: no row at all)."""
    for service, status in expected.items():
        row = stack.row(service, saga_id)
        if status is None:
            assert row is None, f"{service} should hold no row, holds {row}"
            continue
        assert row is not None, f"{service} should hold a {status} row, holds none"
        assert row["status"] == status, f"{service}: {row['status']} != {status}"
        want_value = None if status == "CANCELLED" else user[FIELDS[service]]
        assert row["value"] == want_value, f"{service} stored {row['value']!r}"


def consistency(stack: Stack, process: str = "orchestrator") -> dict[str, Any]:
    """The consistency report, which must have read every service."""
    report = requests.get(f"{stack.urls[process]}/consistency", timeout=60).json()
    assert report["complete"], report
    return report  # type: ignore[no-any-return]


def invoke(stack: Stack, service: str, saga_id: str, value: str = "v", **headers: str) -> requests.Response:
    """A participant's /invoke, called directly."""
    return requests.post(f"{stack.urls[service]}/invoke",
                         json={"saga_id": saga_id, FIELDS[service]: value}, headers=headers, timeout=10)


def compensate(stack: Stack, service: str, saga_id: str, action: str = "compensate") -> requests.Response:
    """A participant's /compensate (or /cancel), called directly."""
    return requests.post(f"{stack.urls[service]}/{action}", json={"saga_id": saga_id}, timeout=10)


def assert_json_error(response: requests.Response, status: int) -> dict[str, Any]:
    """A JSON error of the house shape with `status`, and no stack trace in it."""
    assert response.status_code == status, response.text
    assert response.headers["Content-Type"].startswith("application/json")
    body = response.json()
    assert body["error"]["code"] and body["error"]["message"]
    assert "Traceback" not in response.text
    return body  # type: ignore[no-any-return]


CODES = {"ok": 200, "applied": 200, "error": 500, "rejected": 409, "timeout": None, "unreachable": None}


class ScriptedParticipants:
    """Answers each attempt as scripted for (participant, action): a list of outcomes taken in
    turn (the last one repeats), "ok" when nothing is scripted. "applied" is a cancel's 200
    that says the step had committed."""

    def __init__(self, script: dict[tuple[str, str], list[str]]) -> None:
        self.script = script
        self.calls: list[tuple[str, str, int]] = []
        self.payloads: dict[str, dict[str, Any]] = {}

    def attempt(self, url: str, payload: dict[str, Any], *, number: int, timeout: float,
                fault: str | None = None) -> Attempt:
        participant, action = url.rsplit("/", 2)[-2:]
        outcomes = self.script.get((participant, action), ["ok"])
        made = sum(1 for p, a, _ in self.calls if (p, a) == (participant, action))
        outcome = outcomes[min(made, len(outcomes) - 1)]
        self.calls.append((participant, action, number))
        self.payloads[participant] = payload
        if outcome in ("ok", "applied"):
            status = "APPLIED" if outcome == "applied" or action == "invoke" else (
                "CANCELLED" if action == "cancel" else "COMPENSATED")
            return Attempt(number, 200, "ok", 1, None, {"status": status})
        return Attempt(number, CODES[outcome], outcome, 1, outcome, {})

    def actions(self, action: str) -> list[str]:
        return [participant for participant, a, _ in self.calls if a == action]

    def numbers(self, participant: str, action: str) -> list[int]:
        return [n for p, a, n in self.calls if (p, a) == (participant, action)]
