"""Does what the participants hold agree with how each saga ended? Both models, one check.
(GET /consistency, make check)

Race-free under load: the sagas are read first and the rows after, so a saga that was
finished when it was read already has its final rows; and every suspect is read again
before it is reported (an applied row whose saga was not yet in the snapshot is a saga
that started since, not an orphan).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from common.status import RecordStatus, SagaStatus


class Unreachable(Exception):
    """A participant did not answer (or answered something unreadable)."""


class RowReader(Protocol):
    """Reads the participants' rows (the orchestrator's gateway is one)."""

    @property
    def services(self) -> tuple[str, ...]: ...

    def records(self, service: str) -> Iterator[dict[str, Any]]: ...

    def record(self, service: str, saga_id: str) -> dict[str, Any] | None: ...


@dataclass(frozen=True)
class Part:
    """Where one step of a saga leaves its row: the participant, and the input field it stores."""

    step: str
    participant: str
    field: str


@dataclass(frozen=True)
class SagaSnapshot:
    """A saga as its source recorded it, with where each of its steps keeps a row."""

    id: str
    status: SagaStatus
    input: Mapping[str, str]
    parts: tuple[Part, ...]


class SagaSource(Protocol):
    """Where sagas of one model are recorded: the orchestrator's log, the choreography observer.
    `snapshot` is every saga as recorded now; `exists` asks again about one saga id."""

    model: str

    def snapshot(self) -> Iterator[SagaSnapshot]: ...

    def exists(self, saga_id: str) -> bool: ...


def verdict(status: SagaStatus, rows: Mapping[str, str | None]) -> tuple[str, list[str]]:
    """("consistent" | "inconsistent" | "in_progress", problems) for a saga and its rows' statuses.

    `rows` maps each step to the status of its row there, or None where there is no row.
    """
    if not status.finished:
        return "in_progress", []
    applied = RecordStatus.APPLIED.value
    if status is SagaStatus.COMPLETED:
        problems = [f"{step}: COMPLETED saga, but the row is {row or 'missing'}"
                    for step, row in rows.items() if row != applied]
    else:
        problems = [f"{step}: {status.value} saga, but the row is still APPLIED"
                    for step, row in rows.items() if row == applied]
    return ("inconsistent" if problems else "consistent"), problems


def _violations(saga: SagaSnapshot, rows: Mapping[str, Mapping[str, Any] | None]) -> list[dict[str, str]]:
    """What is wrong between one finished saga and its rows (`rows`: step -> row or None)."""
    if saga.status is SagaStatus.COMPENSATION_FAILED:
        return []  # known and listed as needing attention, not a broken guarantee
    statuses = {step: (row or {}).get("status") for step, row in rows.items()}
    _, problems = verdict(saga.status, statuses)
    kind = ("completed_without_row" if saga.status is SagaStatus.COMPLETED
            else "compensated_with_applied_row")
    found = [{"saga_id": saga.id, "kind": kind, "detail": p} for p in problems]
    if saga.status is SagaStatus.COMPLETED:
        for part in saga.parts:
            row = rows.get(part.step)
            held, wanted = (row or {}).get(part.field), saga.input.get(part.field)
            if row and row.get("status") == RecordStatus.APPLIED and held != wanted:
                found.append({"saga_id": saga.id, "kind": "value_mismatch",
                              "detail": f"{part.step}: holds {part.field}={held!r}, "
                                        f"the saga's input says {wanted!r}"})
    return found


def check_consistency(sources: Iterable[SagaSource], gateway: RowReader) -> dict[str, Any]:
    """Every finished saga of every source against its rows, and every applied row against the sagas."""
    sources = list(sources)
    finished: dict[str, tuple[SagaSource, SagaSnapshot]] = {}
    known: set[str] = set()
    needs_attention: list[str] = []
    in_progress = 0
    for source in sources:  # the sagas first: a saga finished now has its final rows already
        for saga in source.snapshot():
            known.add(saga.id)
            if saga.status is SagaStatus.COMPENSATION_FAILED:
                needs_attention.append(saga.id)
            if saga.status.finished:
                finished[saga.id] = (source, saga)
            else:
                in_progress += 1
    rows: dict[str, dict[str, dict[str, Any]]] = {}
    try:
        for service in gateway.services:
            rows[service] = {row["saga_id"]: row for row in gateway.records(service)}
    except Unreachable as error:
        return {"ok": False, "complete": False, "unreachable": [str(error)], "violations": []}

    violations: list[dict[str, str | None]] = []
    for source, saga in finished.values():
        found = _violations(saga, {p.step: rows.get(p.participant, {}).get(saga.id) for p in saga.parts})
        if found:  # read the suspect's rows again before reporting it
            try:
                found = _violations(saga, {p.step: gateway.record(p.participant, saga.id)
                                           for p in saga.parts})
            except Unreachable as error:
                return {"ok": False, "complete": False, "unreachable": [str(error)], "violations": []}
        violations += [{**v, "model": source.model} for v in found]
    for service, held in rows.items():
        for saga_id, row in held.items():
            if row["status"] != RecordStatus.APPLIED or saga_id in known:
                continue
            if any(source.exists(saga_id) for source in sources):
                continue  # started after the snapshot
            try:
                again = gateway.record(service, saga_id)
            except Unreachable:
                again = row
            if again is None or again["status"] != RecordStatus.APPLIED:
                continue  # undone since (a probe, say)
            violations.append({"saga_id": saga_id, "kind": "applied_row_without_saga", "model": None,
                               "detail": f"{service}: an APPLIED row that no saga owns"})
    return {"ok": not violations, "complete": True, "checked": len(finished),
            "in_progress": in_progress, "needs_attention": needs_attention,
            "violations": violations}
