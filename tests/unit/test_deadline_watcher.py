"""The deadline watcher times out every saga that passed its deadline, whatever one of them does:
a saga that cannot be timed out is left for the next scan, and the sagas after it are not."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy.exc import OperationalError

from choreography.deadlines import DeadlineWatcher


class Passed:
    """Stands in for `Deadlines`: these sagas passed their deadline, none is stuck yet."""

    def __init__(self, saga_ids: list[str]) -> None:
        self.saga_ids = saga_ids

    def passed(self, limit: int = 100) -> list[str]:
        return self.saga_ids

    def stuck(self, after: timedelta, limit: int = 100) -> list[str]:
        return []


def watcher(saga_ids: list[str], time_out: object) -> DeadlineWatcher:
    return DeadlineWatcher(Passed(saga_ids), time_out, interval=60, stuck_after=60)  # type: ignore[arg-type]


def test_a_saga_that_cannot_be_timed_out_holds_up_none_after_it(caplog: pytest.LogCaptureFixture) -> None:
    timed_out: list[str] = []

    def time_out(saga_id: str, _again_after: timedelta | None) -> bool:
        if saga_id == "old":
            raise KeyError("signup@9 is not declared here")
        timed_out.append(saga_id)
        return True

    assert watcher(["old", "s1", "s2"], time_out).scan_once() == 2
    assert timed_out == ["s1", "s2"]
    assert "saga old: could not be timed out" in caplog.text


def test_a_database_that_is_down_ends_the_scan() -> None:
    tried: list[str] = []

    def time_out(saga_id: str, _again_after: timedelta | None) -> bool:
        tried.append(saga_id)
        raise OperationalError("UPDATE saga_deadlines", {}, Exception("server has gone away"))

    with pytest.raises(OperationalError):
        watcher(["s1", "s2"], time_out).scan_once()
    assert tried == ["s1"], "one error for the scan, not one for every saga"
