"""POST /test_status's probe: an /invoke on a throwaway saga, undone at once; when the undo keeps
failing the answer says so (and the log), instead of leaving an applied row behind unsaid."""

from __future__ import annotations

from typing import Any

import pytest

from orchestrator.client import Attempt
from orchestrator.gateway import ParticipantGateway


class Client:
    """Stands in for the participant client: /invoke applies; /compensate answers `undo` in turn."""

    def __init__(self, undo: list[str]) -> None:
        self.undo = undo
        self.calls: list[tuple[str, int]] = []

    def attempt(self, url: str, payload: dict[str, Any], number: int, timeout: float,
                fault: str | None = None) -> Attempt:
        action = url.rsplit("/", 1)[1]
        self.calls.append((action, number))
        outcome = "ok" if action == "invoke" else self.undo[number - 1]
        return Attempt(number, 200 if outcome == "ok" else 503, outcome, 3,
                       None if outcome == "ok" else "503 busy", {"saga_id": payload["saga_id"]})


def probe(client: Client) -> Any:
    gateway = ParticipantGateway(client, {"a": "http://a"}, {"a": ("username",)})  # type: ignore[arg-type]
    return gateway.probe("a", None, timeout=1.0)


def test_an_undo_that_answers_ok_at_its_second_try_is_undone() -> None:
    client = Client(undo=["error", "ok", "ok"])
    assert probe(client).undone is True
    assert client.calls == [("invoke", 1), ("compensate", 1), ("compensate", 2)]


def test_an_undo_that_never_answers_ok_is_said_in_the_answer_and_the_log(
        caplog: pytest.LogCaptureFixture) -> None:
    client = Client(undo=["error", "error", "error"])
    result = probe(client)
    assert result.undone is False and result.attempt.outcome == "ok"
    assert client.calls == [("invoke", 1), ("compensate", 1), ("compensate", 2), ("compensate", 3)]
    assert f"probe {result.saga_id} at a could not be undone" in caplog.text
