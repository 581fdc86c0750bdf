"""What POST /start accepts: the definition's input fields and an optional fault per step."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from common.declaration import SagaDefinition
from common.validation import SagaRequest, parse_saga_request


def parse_start(body: Mapping[str, Any], args: Mapping[str, str], definition: SagaDefinition,
                faults_enabled: bool) -> SagaRequest:
    """Check a /start body and its `?fail_<step>=MODE` flags against `definition`."""
    return parse_saga_request(body, args, definition.input_fields, definition.step_names, faults_enabled)
