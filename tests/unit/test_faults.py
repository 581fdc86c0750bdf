"""Parsing fault modes and what each one makes a participant do."""

import pytest

from common.faults import FAULT_MODES, Fault, FaultKind, parse_fault


@pytest.mark.parametrize(("text", "expected"), [
    ("before_commit", Fault(FaultKind.BEFORE_COMMIT)),
    ("after_commit", Fault(FaultKind.AFTER_COMMIT)),
    ("timeout", Fault(FaultKind.TIMEOUT)),
    ("delay:250", Fault(FaultKind.DELAY, 250)),
    ("transient:2", Fault(FaultKind.TRANSIENT, 2)),
    ("compensate_fail", Fault(FaultKind.COMPENSATE_FAIL)),
    ("compensate_transient:3", Fault(FaultKind.COMPENSATE_TRANSIENT, 3)),
    (" timeout ", Fault(FaultKind.TIMEOUT)),
])
def test_parse_valid_modes(text: str, expected: Fault) -> None:
    assert parse_fault(text) == expected
    assert parse_fault(str(expected)) == expected, "str() gives the canonical mode back"


@pytest.mark.parametrize(("text", "message"), [
    ("explode", "unknown fault mode"),
    ("", "unknown fault mode"),
    ("TIMEOUT", "unknown fault mode"),
    ("transient", "needs a number"),
    ("transient:0", "from 1 to 10"),
    ("transient:11", "from 1 to 10"),
    ("delay:60001", "from 1 to 60000"),
    ("delay:-5", "unknown fault mode"),
    ("after_commit:2", "takes no number"),
])
def test_parse_rejects_with_a_reason(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_fault(text)


def test_every_mode_is_listed() -> None:
    assert FAULT_MODES == ["before_commit", "after_commit", "timeout", "delay:N", "transient:N",
                           "compensate_fail", "compensate_transient:N"]


def test_transient_fails_only_the_first_attempts() -> None:
    fault = parse_fault("transient:2")
    assert [fault.fails_before_commit(n) for n in (1, 2, 3)] == [True, True, False]
    assert not fault.fails_after_commit()


def test_before_commit_always_fails_and_after_commit_fails_after() -> None:
    assert all(parse_fault("before_commit").fails_before_commit(n) for n in (1, 5))
    after = parse_fault("after_commit")
    assert not after.fails_before_commit(1) and after.fails_after_commit()


def test_sleeps() -> None:
    assert parse_fault("delay:250").sleep_before_commit(5.0, 0.5) == 0.25
    assert parse_fault("timeout").sleep_before_commit(5.0, 0.5) == 5.5, "past the caller's timeout"
    assert parse_fault("after_commit").sleep_before_commit(5.0, 0.5) == 0


def test_compensation_faults() -> None:
    assert all(parse_fault("compensate_fail").fails_compensation(n) for n in (1, 100))
    transient = parse_fault("compensate_transient:1")
    assert [transient.fails_compensation(n) for n in (1, 2)] == [True, False]
    assert not parse_fault("before_commit").fails_compensation(1)
