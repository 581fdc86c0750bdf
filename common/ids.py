"""Saga ids: UUIDv7, so that ids made later sort later (both saga models use them)."""

from __future__ import annotations

import os
import uuid
from datetime import datetime, timedelta

from common.db import utcnow

_EPOCH = datetime(1970, 1, 1)


def new_saga_id(at: datetime | None = None) -> str:
    """A UUIDv7 (RFC 9562) as 32 hex digits: 48 bits of Unix milliseconds, then random bits.

    Ids made later sort later, so a new saga goes at the end of the log's primary key and of
    `saga_events`' saga index, pages the database has in memory, not at a random page of a
    log that may be far bigger than its buffer pool (as a random UUID4 would).
    """
    moment = utcnow() if at is None else at
    millis = (moment - _EPOCH) // timedelta(milliseconds=1)
    value = millis << 80 | int.from_bytes(os.urandom(10), "big")
    value = value & ~(0xF << 76) | 0x7 << 76  # version 7
    value = value & ~(0x3 << 62) | 0x2 << 62  # the RFC 4122/9562 variant
    return uuid.UUID(int=value).hex
