"""Signed calls and signed events: only a holder of SERVICE_SECRET can change a participant's row.

A caller sends `X-Saga-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256>`, the MAC taken with
the shared secret over `<t>.<METHOD>.<path>.<raw body>`. A call that also carries headers the
participant obeys (X-Saga-Attempt, X-Saga-Fault, X-Saga-Timeout) is signed `v2` instead, over
`v2.<t>.<METHOD>.<path>.<those headers>.<raw body>` (the headers as `name:value` lines, by
name), so that none of them can be added, changed or dropped. The receiver recomputes the MAC,
compares in constant time, and accepts it for at most MAX_AGE seconds either side of its own
clock. A replay inside that window repeats a call that is idempotent by its saga id, so it
changes nothing; a changed body, path, header or time stamp no longer matches.

An event published through the broker carries `v1=<hex HMAC-SHA256>` of `event.<its body>` in a
message header: no time window (an event may wait in a queue for hours), and a replay is a
repeat of one event id, which every inbox drops.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import time
from typing import Protocol

from common.faults import ATTEMPT_HEADER, FAULT_HEADER, TIMEOUT_HEADER

SIGNATURE_HEADER = "X-Saga-Signature"
COVERED_HEADERS = (ATTEMPT_HEADER, FAULT_HEADER, TIMEOUT_HEADER)  # what a participant obeys
MAX_AGE = 60  # seconds
_FORMAT = re.compile(r"t=(\d{1,12}),(v[12])=([0-9a-f]{64})")
_EVENT_FORMAT = re.compile(r"v1=([0-9a-f]{64})")


class Headers(Protocol):
    """A call's headers, as a dict or a request's holds them."""

    def get(self, key: str, /) -> str | None: ...


class BadSignature(Exception):
    """The call is unsigned, signed with another secret, altered, or too old."""


def covered(headers: Headers | None) -> str:
    """The covered headers a call carries, as the signed string holds them ("" for none)."""
    if not headers:
        return ""
    lines = []
    for name in COVERED_HEADERS:
        value = headers.get(name)
        if value is not None:
            lines.append(f"{name.lower()}:{value}")
    return "\n".join(lines)


def _mac(secret: str, timestamp: str, method: str, path: str, headers: str, body: bytes) -> str:
    parts = [timestamp.encode(), method.upper().encode(), path.encode(), body]
    if headers:
        parts = [b"v2", *parts[:3], headers.encode(), body]
    return hmac.new(secret.encode(), b".".join(parts), hashlib.sha256).hexdigest()


def sign(secret: str, method: str, path: str, body: bytes, now: float | None = None,
         headers: Headers | None = None) -> str:
    """The X-Saga-Signature value for a call (`path` without the query string; `headers` the
    call's headers, of which those a participant obeys are signed too)."""
    timestamp = str(int(time.time() if now is None else now))
    signed = covered(headers)
    return f"t={timestamp},{'v2' if signed else 'v1'}={_mac(secret, timestamp, method, path, signed, body)}"


def verify(secret: str, header: str | None, method: str, path: str, body: bytes,
           now: float | None = None, headers: Headers | None = None) -> None:
    """Raise BadSignature unless `header` signs this call, and the covered `headers` it carries,
    with `secret`, within MAX_AGE seconds."""
    match = _FORMAT.fullmatch(header or "")
    if match is None:
        raise BadSignature(f"missing or malformed {SIGNATURE_HEADER}")
    timestamp, version, given = match.groups()
    if abs((time.time() if now is None else now) - int(timestamp)) > MAX_AGE:
        raise BadSignature(f"signature older (or newer) than {MAX_AGE} s")
    signed = covered(headers)
    if version != ("v2" if signed else "v1"):
        raise BadSignature(f"the signature must cover {', '.join(COVERED_HEADERS)} when the call "
                           "carries any of them (v2), and only then")
    if not hmac.compare_digest(given, _mac(secret, timestamp, method, path, signed, body)):
        raise BadSignature("signature does not match")


def sign_event(secret: str, body: bytes) -> str:
    """The signature an event carries through the broker: `v1=<hex MAC of event.<body>>`."""
    return "v1=" + hmac.new(secret.encode(), b"event." + body, hashlib.sha256).hexdigest()


def verify_event(secret: str, signature: object, body: bytes) -> None:
    """Raise BadSignature unless `signature` is this event body's, made with `secret`."""
    match = _EVENT_FORMAT.fullmatch(signature) if isinstance(signature, str) else None
    if match is None:
        raise BadSignature("the event carries no signature, or a malformed one")
    expected = hmac.new(secret.encode(), b"event." + body, hashlib.sha256).hexdigest()
    if not hmac.compare_digest(match.group(1), expected):
        raise BadSignature("the event's signature does not match")
