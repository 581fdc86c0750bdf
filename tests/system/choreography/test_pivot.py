"""The pivot (signup@2: the payment, never taken back), both ways: whatever the payment step
does, the choreographed saga ends with the rows the orchestrated one leaves. A pivot that
committed and then failed is cancelled, finds itself applied, and the saga completes; one that
never applied is cancelled, and the steps before it are undone."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from scripts.stack import Stack
from tests.support.calls import choreographed, sign_up, start
from tests.support.checks import assert_rows
from tests.support.people import fresh_user
from tests.support.stacks import TEST_DATABASE_URL

APPLIED_ALL = {"a": "APPLIED", "b": "APPLIED", "c": "APPLIED"}
UNDONE = {"a": "COMPENSATED", "b": "COMPENSATED", "c": "CANCELLED"}
SCENARIOS = [
    ("success", {}, "COMPLETED", APPLIED_ALL),
    ("the pivot commits, then fails", {"c": "after_commit"}, "COMPLETED", APPLIED_ALL),
    ("the pivot fails before it commits", {"c": "before_commit"}, "COMPENSATED", UNDONE),
    ("B fails before the pivot", {"b": "before_commit"}, "COMPENSATED",
     {"a": "COMPENSATED", "b": "CANCELLED", "c": None}),
]


@pytest.fixture(scope="module")
def pivot(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    running = Stack(tmp_path_factory.mktemp("pivot"), TEST_DATABASE_URL,
                    settings={"SAGA_DEFINITION": "signup@2"}).start()
    yield running
    running.stop()


@pytest.mark.parametrize(("name", "fail", "status", "rows"), SCENARIOS, ids=[s[0] for s in SCENARIOS])
def test_both_models_leave_the_same_rows_around_the_pivot(
        pivot: Stack, name: str, fail: dict[str, str], status: str, rows: dict[str, str | None]) -> None:
    user = fresh_user()
    answer = start(pivot, user, **fail)
    assert answer.json()["status"] == status, answer.text
    assert_rows(pivot, answer.json()["saga_id"], user, rows)

    user = fresh_user()
    saga_id = sign_up(pivot, user, **fail)
    saga = choreographed(pivot, saga_id)
    assert (saga["status"], saga["definition"]["version"]) == (status, 2), saga
    assert_rows(pivot, saga_id, user, rows)
