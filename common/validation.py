"""Checks on JSON input that answer 400 with a message a person can act on."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, TypeVar

from common.errors import ApiError
from common.faults import Fault, FaultKind, parse_fault
from common.status import Isolation

Choice = TypeVar("Choice", bound=StrEnum)

SAGA_ID_PATTERN = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")
# Control characters (C0, DEL, C1, the line and paragraph separators) and lone surrogates,
# which no database column should hold and which could forge a line in a log.
UNPRINTABLE = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]")


def reject_unknown(given: Iterable[str], allowed: Iterable[str], what: str = "field") -> None:
    """400 if `given` names anything outside `allowed`."""
    unknown = sorted(set(given) - set(allowed))
    if unknown:
        raise ApiError(400, f"unknown_{what}", f"unknown {what}(s): {', '.join(unknown)}; "
                       f"allowed: {', '.join(sorted(allowed))}")


def text_field(body: Mapping[str, Any], name: str, required: bool = True,
               max_length: int = 255) -> str | None:
    """The string `body[name]`, 1 to `max_length` characters; 400 otherwise."""
    if name not in body or body[name] is None:
        if required:
            raise ApiError(400, "missing_field", f"{name!r} is required")
        return None
    value = body[name]
    if not isinstance(value, str):
        raise ApiError(400, "invalid_field", f"{name!r} must be a string")
    if not 1 <= len(value) <= max_length:
        raise ApiError(400, "invalid_field", f"{name!r} must be 1 to {max_length} characters")
    if UNPRINTABLE.search(value):
        raise ApiError(400, "invalid_field", f"{name!r} must not hold control characters or lone "
                       "surrogates (a newline, a tab, \\ud800)")
    return value


def saga_id_field(body: Mapping[str, Any]) -> str:
    """The saga id in `body`: 1 to 64 letters, digits or `_.:-`."""
    saga_id = text_field(body, "saga_id", max_length=64)
    assert saga_id is not None
    if not SAGA_ID_PATTERN.match(saga_id):
        raise ApiError(400, "invalid_field", "'saga_id' may hold only letters, digits and _.:-")
    return saga_id


WHOLE_NUMBER = re.compile(r"[0-9]{1,18}")  # ASCII digits only (str.isdigit() takes "²")


def whole_number_arg(args: Mapping[str, str], name: str, default: int,
                     minimum: int = 0, maximum: int = 10**18 - 1) -> int:
    """A whole-number query argument from `minimum` to `maximum`; 400 otherwise."""
    raw = args.get(name)
    if raw is None:
        return default
    if not WHOLE_NUMBER.fullmatch(raw) or not minimum <= int(raw) <= maximum:
        raise ApiError(400, f"invalid_{name}",
                       f"{name} must be a whole number from {minimum} to {maximum}")
    return int(raw)


def limit_arg(args: Mapping[str, str], default: int = 50, maximum: int = 500) -> int:
    """The `?limit=` query argument, 1 to `maximum`."""
    return whole_number_arg(args, "limit", default, minimum=1, maximum=maximum)


def choice_field(body: Mapping[str, Any], name: str, choices: type[Choice]) -> Choice | None:
    """The optional field `name`, one of the values of the enum `choices`; 400 otherwise."""
    if name not in body:
        return None
    value = body[name]
    if value not in choices.__members__.values():
        raise ApiError(400, "invalid_field", f"'{name}' must be one of "
                       f"{', '.join(choice.value for choice in choices)}")
    return choices(value)


def isolation_field(body: Mapping[str, Any]) -> Isolation | None:
    """The optional `isolation` of a saga: "none" or "semantic_lock"; 400 otherwise."""
    return choice_field(body, "isolation", Isolation)


@dataclass(frozen=True)
class SagaRequest:
    """A valid request to start a saga: its input, the fault to inject per step, and what it does
    about isolation (None: the setting ISOLATION's default)."""

    input: dict[str, str]
    faults: dict[str, str]  # step name -> canonical fault mode
    isolation: Isolation | None = None


def fault_field(mode: object, faults_enabled: bool, lab: bool = False, step: str | None = None) -> Fault:
    """A fault a request asks for (of `step`, if named); 400 if it is not one, if it is the
    isolation lab's own and not `lab` (the lab's signed call), or if fault injection is off
    (`faults_enabled`, FAULTS_ENABLED) and it is not the lab's."""
    where = f"{step}: " if step else ""
    if not isinstance(mode, str):
        raise ApiError(400, "invalid_fault", f"{where}a fault mode is a string")
    try:
        fault = parse_fault(mode)
    except ValueError as error:
        raise ApiError(400, "invalid_fault", f"{where}{error}") from None
    if fault.kind is FaultKind.LAB:
        if not lab:
            raise ApiError(400, "invalid_fault", f"{where}{fault} is the isolation lab's own "
                           "(POST /labs/isolation)")
    elif not faults_enabled:
        raise ApiError(400, "faults_disabled", "fault injection is off here; FAULTS_ENABLED=1 turns it on")
    return fault


def parse_saga_request(body: Mapping[str, Any], args: Mapping[str, str], fields: Sequence[str],
                       steps: Sequence[str], faults_enabled: bool, lab: bool = False) -> SagaRequest:
    """Check a body of `fields` (strings) with an optional `fail` object and `isolation`, and
    `?fail_<step>=MODE` query flags, as /start and /signups take them; ApiError(400) says what is
    wrong (`fault_field`: a fault only with fault injection on, the lab's only from the lab)."""
    reject_unknown(body, (*fields, "fail", "isolation"))
    isolation = isolation_field(body)
    reject_unknown(args, tuple(f"fail_{step}" for step in steps), what="query_flag")
    saga_input = {name: text_field(body, name) for name in fields}
    requested = body.get("fail")
    if requested is None:
        requested = {}
    if not isinstance(requested, dict):
        raise ApiError(400, "invalid_field", "'fail' must be an object such as {\"b\": \"after_commit\"}")
    reject_unknown(requested, steps, what="service")
    requested = {step: mode for step, mode in requested.items() if mode not in (None, "")}  # "no fault"
    for flag, value in args.items():
        step = flag.removeprefix("fail_")
        if step in requested:
            raise ApiError(400, "conflicting_fault", f"the fault for {step} is given twice")
        requested[step] = value
    faults = {step: str(fault_field(mode, faults_enabled, lab, step)) for step, mode in requested.items()
              if mode not in (None, "")}  # the dashboard sends "no fault" as empty
    return SagaRequest({k: v for k, v in saga_input.items() if v is not None}, faults, isolation)
