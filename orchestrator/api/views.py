"""The JSON shapes the orchestrator answers with."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from common.db import iso
from common.declaration import SagaDefinition, StepKind
from common.status import SagaStatus
from common.tracing import trace_id
from orchestrator.model import Event, Saga


def saga_json(saga: Saga) -> dict[str, Any]:
    return {"saga_id": saga.id, "status": saga.status.value,
            "definition": {"name": saga.definition_name, "version": saga.definition_version},
            "isolation": saga.isolation.value,
            "input": saga.input, "fail": saga.faults, "current_step": saga.current_step,
            "failed_step": saga.failed_step, "reason": saga.reason, "error": saga.error,
            "compensation_error": saga.compensation_error,
            "compensation_rounds": saga.compensation_rounds,
            "idempotency_key": saga.idempotency_key, "trace_id": trace_id(saga.trace_parent),
            "lease_owner": saga.lease_owner,
            "lease_expires_at": iso(saga.lease_expires_at),
            "created_at": iso(saga.created_at), "updated_at": iso(saga.updated_at)}


def event_json(event: Event) -> dict[str, Any]:
    return {"step": event.step, "action": event.action, "attempt": event.attempt,
            "http_status": event.http_status, "outcome": event.outcome,
            "latency_ms": event.latency_ms, "error": event.error,
            "orchestrator": event.orchestrator, "at": iso(event.at)}


def definition_json(definition: SagaDefinition, timeout: float, retries: int,
                    compensation_retries: int) -> dict[str, Any]:
    """A definition with every step's policy resolved against the settings' defaults."""
    return {"name": definition.name, "version": definition.version,
            "description": definition.description, "input_fields": list(definition.input_fields),
            "steps": [{"name": s.name, "participant": s.participant, "kind": s.kind.value,
                       "receives": list(s.receives), "action": s.does, "compensation": s.undo,
                       "events": None if s.events is None else asdict(s.events),
                       "timeout": s.timeout if s.timeout is not None else timeout,
                       "retries": None if s.kind is StepKind.RETRIABLE else
                       (s.retries if s.retries is not None else retries),
                       "compensation_retries": s.compensation_retries
                       if s.compensation_retries is not None else compensation_retries}
                      for s in definition.steps]}


def start_answer(saga: Saga, definition: SagaDefinition) -> tuple[dict[str, Any], int]:
    """The /start answer and status code for a saga as it stands."""
    if saga.status is SagaStatus.COMPLETED:
        steps = [{"step": step.name, "status": "APPLIED"} for step in definition.steps]
        return {"saga_id": saga.id, "status": saga.status.value, "steps": steps}, 200
    body = {"saga_id": saga.id, "status": saga.status.value, "failed_step": saga.failed_step,
            "reason": saga.reason, "error": saga.error}
    if saga.status is SagaStatus.COMPENSATION_FAILED:
        body["compensation_error"] = saga.compensation_error
    if not saga.status.finished:  # another orchestrator took it over, or it runs in the background
        return body, 202
    if saga.status is SagaStatus.COMPENSATED and saga.reason == "timeout":
        return body, 504
    return body, 500
