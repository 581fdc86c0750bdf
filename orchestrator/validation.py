"""What POST /start accepts: the definition's input fields and an optional fault per step."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from common.errors import ApiError
from common.faults import parse_fault
from common.validation import reject_unknown, text_field
from orchestrator.definition import SagaDefinition


@dataclass(frozen=True)
class StartRequest:
    """A valid request to start a saga."""

    input: dict[str, str]
    faults: dict[str, str]  # step name -> canonical fault mode


def parse_start(body: Mapping[str, Any], args: Mapping[str, str],
                definition: SagaDefinition) -> StartRequest:
    """Check a /start body and its `?fail_<step>=MODE` flags; ApiError(400) says what is wrong."""
    fields, steps = definition.input_fields, definition.step_names
    reject_unknown(body, (*fields, "fail"))
    reject_unknown(args, tuple(f"fail_{step}" for step in steps), what="query_flag")
    saga_input = {name: text_field(body, name) for name in fields}
    requested = body.get("fail")
    if requested is None:
        requested = {}
    if not isinstance(requested, dict):
        raise ApiError(400, "invalid_field", "'fail' must be an object such as {\"b\": \"after_commit\"}")
    reject_unknown(requested, steps, what="service")
    requested = dict(requested)
    for flag, value in args.items():
        step = flag.removeprefix("fail_")
        if step in requested:
            raise ApiError(400, "conflicting_fault", f"the fault for {step} is given twice")
        requested[step] = value
    faults = {}
    for step, mode in requested.items():
        if mode is None or mode == "":  # the dashboard sends "no fault" as empty
            continue
        if not isinstance(mode, str):
            raise ApiError(400, "invalid_fault", f"the fault for {step} must be a string")
        try:
            faults[step] = str(parse_fault(mode))
        except ValueError as error:
            raise ApiError(400, "invalid_fault", f"{step}: {error}") from None
    return StartRequest({k: v for k, v in saga_input.items() if v is not None}, faults)
