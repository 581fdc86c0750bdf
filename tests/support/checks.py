"""What a test must find: each participant's row, the consistency report, the house's JSON
errors, every table's count unchanged, choreographed sagas all or nothing."""

from __future__ import annotations

from typing import Any

import requests
from sqlalchemy import text

from scripts.stack import Stack
from tests.support.calls import choreographed, event_types
from tests.support.people import FIELDS


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


def all_counts(stack: Stack) -> dict[str, int]:
    """The rows of the saga log's tables and of each participant's, by table: what a refused
    request must leave as it was."""
    tables = [("orchestrator", "sagas"), ("orchestrator", "saga_events"),
              *((service.name, service.table) for service in stack.declaration.services)]
    return {table: stack.count(process, table) for process, table in tables}


def consistency(stack: Stack, process: str = "orchestrator", limit: int = 1000) -> dict[str, Any]:
    """The consistency report of every page, which must have read every service."""
    total: dict[str, Any] = {"checked": 0, "in_progress": 0, "needs_attention": [], "violations": [],
                             "pages": 0}
    after = ""
    while True:
        params = {"limit": str(limit), **({"after": after} if after else {})}
        report = requests.get(f"{stack.urls[process]}/consistency", params=params, timeout=60).json()
        assert "unreachable" not in report, report
        total["pages"] += 1
        for key in ("checked", "in_progress", "needs_attention", "violations"):
            total[key] += report[key]
        if report["next"] is None:
            assert report["complete"], report
            return {**total, "ok": not total["violations"], "complete": True}
        assert not report["complete"], report
        after = report["next"]


def assert_json_error(response: requests.Response, status: int) -> dict[str, Any]:
    """A JSON error of the house shape with `status`, and no stack trace in it."""
    assert response.status_code == status, response.text
    assert response.headers["Content-Type"].startswith("application/json")
    body = response.json()
    assert body["error"]["code"] and body["error"]["message"]
    assert "Traceback" not in response.text
    return body  # type: ignore[no-any-return]


def assert_all_or_nothing(stack: Stack, saga_ids: list[str], seconds: float = 60) -> list[str]:
    """Every choreographed saga ended, each event happened once, each table holds at most one
    row a saga, and the consistency check finds nothing. The final statuses."""
    statuses = []
    for saga_id in saga_ids:
        saga = choreographed(stack, saga_id, seconds=seconds, statuses=("COMPLETED", "COMPENSATED"))
        types = event_types(saga)
        assert len(types) == len(set(types)), f"an event happened twice: {types}"
        statuses.append(saga["status"])
    for service, table in ((s.name, s.table) for s in stack.declaration.services):
        with stack.engines[service].connect() as connection:
            twice = connection.execute(text(f"SELECT saga_id FROM {table} GROUP BY saga_id "
                                            "HAVING COUNT(*) > 1")).all()
        assert twice == []
    report = consistency(stack)
    assert report["violations"] == [], report["violations"][:5]
    return statuses
