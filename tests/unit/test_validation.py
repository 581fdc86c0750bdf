"""What /start accepts, and the verdict on a saga's rows."""

from typing import Any

import pytest

from common.consistency import verdict
from common.errors import ApiError
from common.status import SagaStatus
from orchestrator.saga import SIGNUP_V1
from orchestrator.validation import parse_start

USER = {"username": "ada", "address": "1 Main St", "payment": "visa"}


def test_start_without_faults() -> None:
    request = parse_start(USER, {}, SIGNUP_V1)
    assert (request.input, request.faults) == (USER, {})


def test_faults_from_body_and_query_are_canonical() -> None:
    request = parse_start({**USER, "fail": {"a": " timeout", "b": None}},
                          {"fail_c": "transient:2"}, SIGNUP_V1)
    assert request.faults == {"a": "timeout", "c": "transient:2"}


@pytest.mark.parametrize(("body", "args", "code"), [
    ({**USER, "username": None}, {}, "missing_field"),
    ({**USER, "payment": 3}, {}, "invalid_field"),
    ({**USER, "address": "x" * 256}, {}, "invalid_field"),
    ({**USER, "extra": 1}, {}, "unknown_field"),
    ({**USER, "fail": ["b"]}, {}, "invalid_field"),
    ({**USER, "fail": {"z": "timeout"}}, {}, "unknown_service"),
    ({**USER, "fail": {"b": 5}}, {}, "invalid_fault"),
    ({**USER, "fail": {"b": "boom"}}, {}, "invalid_fault"),
    (USER, {"fail_x": "timeout"}, "unknown_query_flag"),
    ({**USER, "fail": {"a": "timeout"}}, {"fail_a": "timeout"}, "conflicting_fault"),
])
def test_bad_start_requests(body: dict[str, Any], args: dict[str, str], code: str) -> None:
    with pytest.raises(ApiError) as raised:
        parse_start(body, args, SIGNUP_V1)
    assert (raised.value.status, raised.value.code) == (400, code)


@pytest.mark.parametrize(("status", "rows", "expected"), [
    (SagaStatus.COMPLETED, {"a": "APPLIED", "b": "APPLIED", "c": "APPLIED"}, "consistent"),
    (SagaStatus.COMPLETED, {"a": "APPLIED", "b": None, "c": "APPLIED"}, "inconsistent"),
    (SagaStatus.COMPENSATED, {"a": "COMPENSATED", "b": "CANCELLED", "c": None}, "consistent"),
    (SagaStatus.COMPENSATED, {"a": "APPLIED", "b": "CANCELLED", "c": None}, "inconsistent"),
    (SagaStatus.COMPENSATION_FAILED, {"a": "APPLIED", "b": "APPLIED", "c": "CANCELLED"}, "inconsistent"),
    (SagaStatus.RUNNING, {"a": "APPLIED", "b": None, "c": None}, "in_progress"),
])
def test_verdict(status: SagaStatus, rows: dict[str, str | None], expected: str) -> None:
    outcome, problems = verdict(status, rows)
    assert outcome == expected
    assert bool(problems) == (expected == "inconsistent")
