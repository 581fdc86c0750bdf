"""Does what A, B and C hold agree with how each saga ended? (GET /consistency, make check)"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from common.status import RecordStatus, SagaStatus
from orchestrator.client import ParticipantClient
from orchestrator.store import SagaStore


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


def service_rows(client: ParticipantClient, url: str, page_size: int = 1000) -> dict[str, str]:
    """Every row a service holds, saga id -> status, read in pages."""
    rows: dict[str, str] = {}
    after = 0
    while True:
        response = client.get(f"{url}/records?after={after}&limit={page_size}")
        response.raise_for_status()
        page = response.json()["records"]
        rows.update((record["saga_id"], record["status"]) for record in page)
        if len(page) < page_size:
            return rows
        after = page[-1]["id"]


def check_consistency(store: SagaStore, client: ParticipantClient,
                      urls: Mapping[str, str]) -> dict[str, Any]:
    """Every finished saga against the rows of every service, and every applied row against the log."""
    rows: dict[str, dict[str, str]] = {}
    unreachable = []
    for step, url in urls.items():
        try:
            rows[step] = service_rows(client, url)
        except Exception as error:  # noqa: BLE001 - a service that cannot be read is reported
            unreachable.append(f"{step}: {error}")
    if unreachable:
        return {"ok": False, "complete": False, "unreachable": unreachable, "violations": []}
    violations: list[dict[str, str]] = []
    needs_attention, in_progress, checked = [], 0, 0
    known = set()
    for saga_id, status in store.all_statuses():
        known.add(saga_id)
        if status is SagaStatus.COMPENSATION_FAILED:
            needs_attention.append(saga_id)
        if not status.finished:
            in_progress += 1
            continue
        checked += 1
        outcome, problems = verdict(status, {step: rows[step].get(saga_id) for step in urls})
        if outcome == "inconsistent" and status is not SagaStatus.COMPENSATION_FAILED:
            kind = ("completed_without_row" if status is SagaStatus.COMPLETED
                    else "compensated_with_applied_row")
            violations += [{"saga_id": saga_id, "kind": kind, "detail": p} for p in problems]
    for step in urls:
        for saga_id, row_status in rows[step].items():
            if row_status == RecordStatus.APPLIED.value and saga_id not in known:
                violations.append({"saga_id": saga_id, "kind": "applied_row_without_saga",
                                   "detail": f"{step}: an APPLIED row that no saga in the log owns"})
    return {"ok": not violations, "complete": True, "checked": checked, "in_progress": in_progress,
            "needs_attention": needs_attention, "violations": violations}
