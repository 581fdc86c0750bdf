"""An event: a fact, named in the past tense by the service that owns it, in one envelope."""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass, field
from typing import Any

from common.db import iso, utcnow

EVENT_ID = re.compile(r"[0-9a-f]{32}")
SAGA_ID = re.compile(r"[A-Za-z0-9_.:-]{1,64}")
TYPE = re.compile(r"[A-Z][A-Za-z]{1,63}")


class BadEnvelope(ValueError):
    """What arrived is not an event this system could ever handle."""


@dataclass(frozen=True)
class Envelope:
    """The same envelope everywhere (CloudEvents' id, type, source, time, data)."""

    type: str
    saga_id: str
    source: str  # the service whose fact it is: "a", "b", "c"
    payload: dict[str, Any]
    event_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    occurred_at: str = field(default_factory=lambda: iso(utcnow()) or "")
    traceparent: str | None = None  # W3C trace context of the span that published it

    def to_json(self) -> dict[str, Any]:
        body = {"event_id": self.event_id, "type": self.type, "saga_id": self.saga_id,
                "source": self.source, "occurred_at": self.occurred_at, "payload": self.payload}
        if self.traceparent:
            body["traceparent"] = self.traceparent
        return body

    def dumps(self) -> str:
        return json.dumps(self.to_json(), separators=(",", ":"))

    @classmethod
    def from_json(cls, body: Any, known_types: frozenset[str]) -> Envelope:
        """Check an envelope that came from outside; BadEnvelope says what is wrong."""
        if not isinstance(body, dict):
            raise BadEnvelope("an event is a JSON object")
        fields = {"event_id", "type", "saga_id", "source", "occurred_at", "payload", "traceparent"}
        if set(body) - fields or not {"event_id", "type", "saga_id", "source", "payload"} <= set(body):
            raise BadEnvelope(f"an event has the fields {', '.join(sorted(fields))}")
        checks = [(EVENT_ID, "event_id"), (SAGA_ID, "saga_id"), (TYPE, "type")]
        for pattern, name in checks:
            if not isinstance(body[name], str) or not pattern.fullmatch(body[name]):
                raise BadEnvelope(f"{name} is malformed")
        if body["type"] not in known_types:
            raise BadEnvelope(f"unknown event type {body['type']!r}")
        if not isinstance(body["payload"], dict) or not isinstance(body["source"], str):
            raise BadEnvelope("payload must be an object and source a string")
        traceparent = body.get("traceparent")
        return cls(type=body["type"], saga_id=body["saga_id"], source=body["source"][:16],
                   payload=body["payload"], event_id=body["event_id"],
                   occurred_at=str(body.get("occurred_at", ""))[:32],
                   traceparent=traceparent if isinstance(traceparent, str) else None)

    @classmethod
    def loads(cls, text: str | bytes, known_types: frozenset[str]) -> Envelope:
        try:
            body = json.loads(text)
        except (ValueError, RecursionError):
            raise BadEnvelope("not JSON") from None
        return cls.from_json(body, known_types)
