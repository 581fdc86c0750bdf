"""Does what the participants hold agree with how each saga ended? Both models, one check.
(GET /consistency, make check)

Bounded: a page at a time. Saga ids sort by when they were made, so a page is the next
`limit` sagas of every model after a cursor, and the rows the participants hold for ids in the
same range; the answer says where the next page starts (`next`), and `complete` only once the
last page is checked. Race-free under load: the sagas are read first and the rows after, so a
saga that was finished when it was read already has its final rows; and every suspect is read
again before it is reported (an applied row whose saga was not yet in the snapshot is a saga
that started since, not an orphan).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from common.status import LIVE, Model, RecordStatus, SagaStatus

DEFAULT_PAGE = 1000  # sagas a page checks, of all models together
MAX_PAGE = 5000


class Unreachable(Exception):
    """A participant did not answer (or answered something unreadable)."""


class RowReader(Protocol):
    """Reads the participants' rows (the orchestrator's gateway is one)."""

    @property
    def services(self) -> tuple[str, ...]: ...

    def records_between(self, service: str, after: str, until: str | None) -> Iterable[dict[str, Any]]: ...

    def record(self, service: str, saga_id: str) -> dict[str, Any] | None: ...


@dataclass(frozen=True)
class Part:
    """Where one step of a saga leaves its row: the participant, and the input field it stores."""

    step: str
    participant: str
    field: str


@dataclass(frozen=True)
class SagaSnapshot:
    """A saga as its source recorded it, with where each of its steps keeps a row, and why it
    needs a person's attention, if it does (a failed compensation, a saga stuck past its time)."""

    id: str
    status: SagaStatus
    input: Mapping[str, str]
    parts: tuple[Part, ...]
    attention: str | None = None


class SagaSource(Protocol):
    """Where sagas of one model are recorded: the orchestrator's log, the choreography observer.
    `page` is the next `limit` sagas by id after `after`, as recorded now; `snapshot` one saga
    so (None if unknown); `exists` asks again about one saga id; `recent` the newest as the API
    shows them."""

    model: Model

    def page(self, after: str, limit: int) -> list[SagaSnapshot]: ...

    def snapshot(self, saga_id: str) -> SagaSnapshot | None: ...

    def exists(self, saga_id: str) -> bool: ...

    def recent(self, limit: int, status: SagaStatus | None) -> list[dict[str, Any]]: ...


def verdict(status: SagaStatus, rows: Mapping[str, str | None], model: Model) -> tuple[str, list[str]]:
    """("consistent" | "inconsistent" | "in_progress", problems) for a saga of `model` and its
    rows' statuses.

    `rows` maps each step to the status of its row there, or None where there is no row.
    """
    if not status.finished:
        return "in_progress", []
    if _releasing(status, model) and all(row in LIVE for row in rows.values()) and \
            RecordStatus.PENDING in rows.values():
        return "in_progress", []  # the lock's release is on its way (_held_too_long if it stays)
    applied = RecordStatus.APPLIED.value
    if status is SagaStatus.COMPLETED:  # a PENDING row too: a semantic lock that outlived its saga
        problems = [f"{step}: COMPLETED saga, but the row is {row or 'missing'}"
                    for step, row in rows.items() if row != applied]
    else:
        problems = [f"{step}: {status.value} saga, but the row is still {row}"
                    for step, row in rows.items() if row in LIVE]
    return ("inconsistent" if problems else "consistent"), problems


def _violations(saga: SagaSnapshot, model: Model,
                rows: Mapping[str, Mapping[str, Any] | None]) -> list[dict[str, str]]:
    """What is wrong between one saga of `model` and its rows (`rows`: step -> row or None)."""
    found = [{"saga_id": saga.id, "kind": "model_mismatch",
              "detail": f"{step}: the row was made by {row['model']}, the saga is {model.value}"}
             for step, row in rows.items() if row is not None and row.get("model", model) != model]
    if not saga.status.finished or saga.status is SagaStatus.COMPENSATION_FAILED:
        return found  # running; or known and listed as needing attention, not a broken guarantee
    statuses = {step: (row or {}).get("status") for step, row in rows.items()}
    _, problems = verdict(saga.status, statuses, model)
    kind = ("completed_without_row" if saga.status is SagaStatus.COMPLETED
            else "compensated_with_applied_row")
    found += [{"saga_id": saga.id, "kind": kind, "detail": p} for p in problems]
    if saga.status is SagaStatus.COMPLETED:
        for part in saga.parts:
            row = rows.get(part.step)
            held, wanted = (row or {}).get(part.field), saga.input.get(part.field)
            if row and row.get("status") == RecordStatus.APPLIED and held != wanted:
                found.append({"saga_id": saga.id, "kind": "value_mismatch",
                              "detail": f"{part.step}: holds {part.field}={held!r}, "
                                        f"the saga's input says {wanted!r}"})
    return found


def _releasing(status: SagaStatus, model: Model) -> bool:
    """A choreographed saga is COMPLETED when its last step's event is seen; the service that
    holds its semantic lock releases it when it handles that same event, a moment later. (The
    orchestrator logs COMPLETED only after the release.)"""
    return model is Model.CHOREOGRAPHY and status is SagaStatus.COMPLETED


def _held_too_long(saga: SagaSnapshot, model: Model, rows: Mapping[str, Mapping[str, Any] | None],
                   bound: float | None) -> list[dict[str, str]]:
    """The semantic locks (PENDING rows) held longer than `bound` seconds by a saga still running,
    releasing, or whose compensation failed (its rows stay as they are until a person acts):
    while it holds one, every other saga that wants the value waits."""
    holding = (not saga.status.finished or saga.status is SagaStatus.COMPENSATION_FAILED
               or _releasing(saga.status, model))
    if bound is None or not holding:
        return []
    now = datetime.now(UTC)
    found = []
    for step, row in rows.items():
        if row is None or row.get("status") != RecordStatus.PENDING or not row.get("updated_at"):
            continue
        held = (now - datetime.fromisoformat(str(row["updated_at"]))).total_seconds()
        if held > bound:
            found.append({"saga_id": saga.id, "model": model.value,
                          "reason": f"{step}: holds a semantic lock (PENDING) for {held:.0f} s; "
                                    "other sagas wanting its value wait until it ends"})
    return found


def check_consistency(sources: Iterable[SagaSource], gateway: RowReader, after: str = "",
                      limit: int = DEFAULT_PAGE, lock_attention_after: float | None = None) -> dict[str, Any]:
    """One page: the next `limit` sagas of every source after the cursor `after`, each against
    its rows, and every live row in the same range of saga ids against the sagas; a semantic
    lock held longer than `lock_attention_after` seconds needs attention."""
    sources = list(sources)
    fetched = [(source, saga) for source in sources for saga in source.page(after, limit)]
    fetched.sort(key=lambda pair: pair[1].id)
    page = fetched[:limit]
    more = len(fetched) > limit or any(len([1 for s, _ in fetched if s is source]) >= limit
                                       for source in sources)
    until = page[-1][1].id if more and page else None
    known = {saga.id for _, saga in page}
    needs_attention = [{"saga_id": saga.id, "model": source.model.value, "reason": saga.attention}
                       for source, saga in page if saga.attention]
    in_progress = sum(1 for _, saga in page if not saga.status.finished)

    def incomplete(error: Unreachable) -> dict[str, Any]:
        return {"ok": False, "complete": False, "unreachable": [str(error)], "violations": [],
                "needs_attention": needs_attention, "next": after or None}

    rows: dict[str, dict[str, dict[str, Any]]] = {}
    try:  # the sagas first, then the rows: a saga finished then has its final rows already
        for service in gateway.services:
            rows[service] = {row["saga_id"]: row for row in gateway.records_between(service, after, until)}
    except Unreachable as error:
        return incomplete(error)

    violations: list[dict[str, str | None]] = []
    for source, saga in page:
        its_rows = {p.step: rows.get(p.participant, {}).get(saga.id) for p in saga.parts}
        needs_attention += _held_too_long(saga, source.model, its_rows, lock_attention_after)
        found = _violations(saga, source.model, its_rows)
        if found:  # read the suspect's rows again before reporting it
            try:
                found = _violations(saga, source.model,
                                    {p.step: gateway.record(p.participant, saga.id) for p in saga.parts})
            except Unreachable as error:
                return incomplete(error)
        violations += [{**v, "model": source.model.value} for v in found]
    for service, held in rows.items():
        for saga_id, row in held.items():
            if row["status"] not in LIVE or saga_id in known:
                continue
            if any(source.exists(saga_id) for source in sources):
                continue  # started after the snapshot
            try:
                again = gateway.record(service, saga_id)
            except Unreachable:
                again = row
            if again is None or again["status"] not in LIVE:
                continue  # undone since (a probe, say)
            violations.append({"saga_id": saga_id, "kind": "applied_row_without_saga",
                               "model": again.get("model"),
                               "detail": f"{service}: an {again['status']} row that no saga owns"})
    return {"ok": not violations, "complete": until is None, "checked": len(page),
            "in_progress": in_progress, "needs_attention": needs_attention,
            "violations": violations, "next": until}


def check_everything(sources: Iterable[SagaSource], gateway: RowReader, limit: int = DEFAULT_PAGE,
                     lock_attention_after: float | None = None) -> dict[str, Any]:
    """Every page, one after another (`make check`, and the tests): one report for all of them."""
    sources = list(sources)
    total: dict[str, Any] = {"ok": True, "complete": False, "checked": 0, "in_progress": 0,
                             "needs_attention": [], "violations": [], "pages": 0}
    after = ""
    while True:
        report = check_consistency(sources, gateway, after, limit, lock_attention_after)
        total["pages"] += 1
        total["needs_attention"] += report["needs_attention"]
        total["violations"] += report["violations"]
        if "unreachable" in report:
            return {**total, "ok": False, "unreachable": report["unreachable"]}
        total["checked"] += report["checked"]
        total["in_progress"] += report["in_progress"]
        if report["next"] is None:
            return {**total, "ok": not total["violations"], "complete": True}
        after = report["next"]
