"""What /start accepts, and the verdict on a saga's rows."""

from typing import Any

import pytest

from common.consistency import verdict
from common.errors import ApiError
from common.status import Model, SagaStatus
from common.validation import parse_saga_request
from orchestrator.validation import parse_start
from sagas.signup import SIGNUP_V1
from tests.support.people import fresh_user


def test_start_without_faults() -> None:
    user = fresh_user()
    request = parse_start(user, {}, SIGNUP_V1, faults_enabled=True)
    assert (request.input, request.faults) == (user, {})


def test_faults_from_body_and_query_are_canonical() -> None:
    request = parse_start({**fresh_user(), "fail": {"a": " timeout", "b": None}},
                          {"fail_c": "transient:2"}, SIGNUP_V1, faults_enabled=True)
    assert request.faults == {"a": "timeout", "c": "transient:2"}


@pytest.mark.parametrize(("changes", "args", "code"), [
    ({"username": None}, {}, "missing_field"),
    ({"payment": 3}, {}, "invalid_field"),
    ({"address": "x" * 256}, {}, "invalid_field"),
    ({"extra": 1}, {}, "unknown_field"),
    ({"fail": ["b"]}, {}, "invalid_field"),
    ({"fail": {"z": "timeout"}}, {}, "unknown_service"),
    ({"fail": {"b": 5}}, {}, "invalid_fault"),
    ({"fail": {"b": "boom"}}, {}, "invalid_fault"),
    ({}, {"fail_x": "timeout"}, "unknown_query_flag"),
    ({"fail": {"a": "timeout"}}, {"fail_a": "timeout"}, "conflicting_fault"),
])
def test_bad_start_requests(changes: dict[str, Any], args: dict[str, str], code: str) -> None:
    """A fresh user's sign-up, changed as the case says."""
    with pytest.raises(ApiError) as raised:
        parse_start({**fresh_user(), **changes}, args, SIGNUP_V1, faults_enabled=True)
    assert (raised.value.status, raised.value.code) == (400, code)


@pytest.mark.parametrize(("fail", "enabled", "lab", "code"), [
    ({"b": "timeout"}, False, False, "faults_disabled"),
    ({"b": "boom"}, False, False, "invalid_fault"),  # not a fault at all, on or off
    ({"b": "lab"}, True, False, "invalid_fault"),  # the isolation lab's own, from anyone else
    ({"b": "lab"}, False, True, None),  # from the lab: whatever FAULTS_ENABLED says
    ({"b": "timeout"}, False, True, "faults_disabled"),  # the lab asks for its own fault only
])
def test_a_fault_needs_fault_injection_on_but_the_labs_own(fail: dict[str, str], enabled: bool, lab: bool,
                                                           code: str | None) -> None:
    body = {**fresh_user(), "fail": fail}
    steps = SIGNUP_V1.step_names
    if code is None:
        assert parse_saga_request(body, {}, SIGNUP_V1.input_fields, steps, enabled, lab=lab).faults == fail
        return
    with pytest.raises(ApiError) as raised:
        parse_saga_request(body, {}, SIGNUP_V1.input_fields, steps, enabled, lab=lab)
    assert (raised.value.status, raised.value.code) == (400, code)


ORCHESTRATED, CHOREOGRAPHED = Model.ORCHESTRATION, Model.CHOREOGRAPHY


@pytest.mark.parametrize(("status", "rows", "model", "expected"), [
    (SagaStatus.COMPLETED, {"a": "APPLIED", "b": "APPLIED", "c": "APPLIED"}, ORCHESTRATED, "consistent"),
    (SagaStatus.COMPLETED, {"a": "APPLIED", "b": None, "c": "APPLIED"}, ORCHESTRATED, "inconsistent"),
    (SagaStatus.COMPENSATED, {"a": "COMPENSATED", "b": "CANCELLED", "c": None}, ORCHESTRATED, "consistent"),
    (SagaStatus.COMPENSATED, {"a": "APPLIED", "b": "CANCELLED", "c": None}, ORCHESTRATED, "inconsistent"),
    (SagaStatus.COMPENSATION_FAILED, {"a": "APPLIED", "b": "APPLIED", "c": "CANCELLED"}, ORCHESTRATED,
     "inconsistent"),
    (SagaStatus.RUNNING, {"a": "APPLIED", "b": None, "c": None}, ORCHESTRATED, "in_progress"),
    # The orchestrator logs COMPLETED after releasing a semantic lock: one still held is wrong.
    (SagaStatus.COMPLETED, {"a": "PENDING", "b": "APPLIED", "c": "APPLIED"}, ORCHESTRATED, "inconsistent"),
    # Choreographed, A releases it when it handles the last event, just after the observer.
    (SagaStatus.COMPLETED, {"a": "PENDING", "b": "APPLIED", "c": "APPLIED"}, CHOREOGRAPHED, "in_progress"),
    (SagaStatus.COMPLETED, {"a": "PENDING", "b": "APPLIED", "c": None}, CHOREOGRAPHED, "inconsistent"),
    (SagaStatus.COMPENSATED, {"a": "PENDING", "b": None, "c": None}, CHOREOGRAPHED, "inconsistent"),
])
def test_verdict(status: SagaStatus, rows: dict[str, str | None], model: Model, expected: str) -> None:
    outcome, problems = verdict(status, rows, model)
    assert outcome == expected
    assert bool(problems) == (expected == "inconsistent")


def test_chart_buckets_count_per_second_by_outcome_with_p50_and_p99() -> None:
    from datetime import datetime, timedelta

    from common.stats import buckets

    until = datetime(2026, 1, 1, 12, 0, 0)
    finished = [("COMPLETED", until - timedelta(seconds=15, milliseconds=ms), until - timedelta(seconds=15))
                for ms in range(1, 101)]  # 100 sagas in the second bucket, 1 to 100 ms long
    finished.append(("COMPENSATED", until - timedelta(seconds=5, milliseconds=500),
                     until - timedelta(seconds=5)))
    finished.append(("COMPLETED", until - timedelta(minutes=9), until - timedelta(minutes=8)))  # too old
    result = buckets(finished, until, minutes=1, bucket_seconds=10)
    assert len(result) == 6 and result[0]["start"] == "2026-01-01T11:59:00.000Z"
    assert (result[4]["completed"], result[4]["p50_ms"], result[4]["p99_ms"]) == (10.0, 50.0, 99.0)
    assert (result[5]["compensated"], result[5]["completed"], result[5]["p50_ms"]) == (0.1, 0.0, 500.0)
    assert result[0]["p50_ms"] is None
