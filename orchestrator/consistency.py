"""Does what A, B and C hold agree with how a saga ended?"""

from __future__ import annotations

from collections.abc import Mapping

from common.status import RecordStatus, SagaStatus


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
