"""Signed calls between services: only a holder of SERVICE_SECRET can change a participant's row.

A caller sends `X-Saga-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256>`, the MAC taken with
the shared secret over `<t>.<METHOD>.<path>.<raw body>`. The receiver recomputes it, compares
in constant time, and accepts it for at most MAX_AGE seconds either side of its own clock.
A replay inside that window repeats a call that is idempotent by its saga id, so it changes
nothing; a changed body, path or time stamp no longer matches.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import time

SIGNATURE_HEADER = "X-Saga-Signature"
MAX_AGE = 60  # seconds
_FORMAT = re.compile(r"t=(\d{1,12}),v1=([0-9a-f]{64})")


class BadSignature(Exception):
    """The call is unsigned, signed with another secret, altered, or too old."""


def _mac(secret: str, timestamp: str, method: str, path: str, body: bytes) -> str:
    message = b".".join([timestamp.encode(), method.upper().encode(), path.encode(), body])
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def sign(secret: str, method: str, path: str, body: bytes, now: float | None = None) -> str:
    """The X-Saga-Signature value for a call (`path` without the query string)."""
    timestamp = str(int(time.time() if now is None else now))
    return f"t={timestamp},v1={_mac(secret, timestamp, method, path, body)}"


def verify(secret: str, header: str | None, method: str, path: str, body: bytes,
           now: float | None = None) -> None:
    """Raise BadSignature unless `header` signs this call with `secret`, within MAX_AGE seconds."""
    match = _FORMAT.fullmatch(header or "")
    if match is None:
        raise BadSignature(f"missing or malformed {SIGNATURE_HEADER}")
    timestamp, given = match.groups()
    if abs((time.time() if now is None else now) - int(timestamp)) > MAX_AGE:
        raise BadSignature(f"signature older (or newer) than {MAX_AGE} s")
    if not hmac.compare_digest(given, _mac(secret, timestamp, method, path, body)):
        raise BadSignature("signature does not match")
