"""Participants scripted in-process, for the engine and the API without a network."""

from __future__ import annotations

from typing import Any

from orchestrator.client import Attempt

CODES = {"ok": 200, "applied": 200, "error": 500, "rejected": 409, "locked": 409, "timeout": None,
         "unreachable": None}


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
