"""An event: a fact, named in the past tense by the service that owns it, in one envelope."""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from common.db import iso, utcnow
from common.errors import ApiError

EVENT_ID = re.compile(r"[0-9a-f]{32}")
SAGA_ID = re.compile(r"[A-Za-z0-9_.:-]{1,64}")
TYPE = re.compile(r"[A-Z][A-Za-z]{1,63}")
MOMENT = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,6})?Z?")
TRACEPARENT = re.compile(r"[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}")
TEXT = re.compile(r"[^\x00-\x1f\x7f-\x9f\ud800-\udfff]{0,2000}")


def event_id_field(body: Mapping[str, Any]) -> str:
    """The `event_id` a request names; 400 unless it is an event id (32 hex digits)."""
    event_id = body.get("event_id")
    if not isinstance(event_id, str) or not EVENT_ID.fullmatch(event_id):
        raise ApiError(400, "invalid_field", "'event_id' must be an event id (32 hex digits)")
    return event_id


class Refused(ValueError):
    """An event this service will never handle: it goes to the dead letters with this reason.
    `kind` names the reason in a word, from a small set (a metric's label)."""

    kind = "refused"

    def __init__(self, message: str, kind: str | None = None) -> None:
        super().__init__(message)
        if kind is not None:
            self.kind = kind


class BadEnvelope(Refused):
    """What arrived is not an event this system could ever handle (malformed, of a type it does
    not know, or whose source is not the service that owns its type)."""

    kind = "malformed"


def parse_moment(text: str) -> datetime:
    """An envelope's ISO 8601 moment (UTC, with or without its Z) as the naive UTC time the
    tables store; ValueError if it is none."""
    return datetime.fromisoformat(text.removesuffix("Z"))


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
    def stored(cls, text: str) -> Envelope:
        """An envelope as `dumps` wrote it into a table here (checked when it came in, or ours)."""
        body = json.loads(text)
        return cls(body["type"], body["saga_id"], body["source"], body["payload"], body["event_id"],
                   body.get("occurred_at", ""), body.get("traceparent"))

    @classmethod
    def from_json(cls, body: Any, known_types: frozenset[str],
                  owners: Mapping[str, str] | None = None) -> Envelope:
        """Check an envelope that came from outside, fields and payload; BadEnvelope says what is
        wrong. With `owners` (event type -> the service whose fact it is), the source must match."""
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
        owner = None if owners is None else owners.get(body["type"])
        if owners is not None and body["source"] != owner:
            raise BadEnvelope(f"a {body['type']} is {owner}'s fact, not {body['source']!r}'s", "not_owner")
        for name, pattern in (("occurred_at", MOMENT), ("traceparent", TRACEPARENT)):
            value = body.get(name)
            if value is not None and not (isinstance(value, str) and pattern.fullmatch(value)):
                raise BadEnvelope(f"{name} is malformed")
        check_payload(body["payload"])
        return cls(type=body["type"], saga_id=body["saga_id"], source=str(body["source"]),
                   payload=body["payload"], event_id=body["event_id"],
                   occurred_at=body.get("occurred_at") or "", traceparent=body.get("traceparent"))

    @classmethod
    def loads(cls, text: str | bytes, known_types: frozenset[str],
              owners: Mapping[str, str] | None = None) -> Envelope:
        try:
            body = json.loads(text)
        except (ValueError, RecursionError):
            raise BadEnvelope("not JSON") from None
        return cls.from_json(body, known_types, owners)


def _strings(value: Any, name: str) -> None:
    if not isinstance(value, dict) or not all(
            isinstance(k, str) and isinstance(v, str) and TEXT.fullmatch(k) and TEXT.fullmatch(v)
            for k, v in value.items()):
        raise BadEnvelope(f"payload.{name} must be an object of strings")


def check_payload(payload: Any) -> None:
    """What a payload may hold: the saga's input and faults (objects of strings), its deadline
    (an ISO 8601 moment), its definition (`name@version`) and isolation, and a failure's reason
    and error (strings); nothing else."""
    if not isinstance(payload, dict):
        raise BadEnvelope("payload must be an object")
    unknown = set(payload) - {"input", "fail", "deadline", "definition", "isolation", "reason", "error"}
    if unknown:
        raise BadEnvelope(f"unknown payload field(s): {', '.join(sorted(unknown))}")
    for name in ("input", "fail"):
        if name in payload:
            _strings(payload[name], name)
    deadline = payload.get("deadline")
    if deadline is not None and not (isinstance(deadline, str) and MOMENT.fullmatch(deadline)):
        raise BadEnvelope("payload.deadline must be an ISO 8601 moment")
    for name in ("definition", "isolation", "reason", "error"):
        if name in payload and not (isinstance(payload[name], str) and TEXT.fullmatch(payload[name])):
            raise BadEnvelope(f"payload.{name} must be a string")
