"""Saga ids: UUIDv7, so the log's keys grow with time instead of landing on random pages."""

from __future__ import annotations

import re
import uuid
from datetime import datetime, timedelta

from common.ids import new_saga_id


def test_a_saga_id_is_a_uuid7_in_32_hex_digits() -> None:
    saga_id = new_saga_id()
    assert re.fullmatch(r"[0-9a-f]{32}", saga_id)
    parsed = uuid.UUID(saga_id)
    assert parsed.version == 7
    assert parsed.variant == uuid.RFC_4122


def test_its_first_48_bits_are_the_unix_milliseconds() -> None:
    at = datetime(2026, 11, 26, 15, 30, 45, 123456)
    millis = int(new_saga_id(at)[:12], 16)
    assert millis == 1_795_707_045_123  # 2026-11-26T15:30:45.123Z


def test_ids_made_later_sort_later_and_never_repeat() -> None:
    start = datetime(2026, 1, 1)
    ids = [new_saga_id(start + timedelta(milliseconds=i)) for i in range(1000)]
    assert ids == sorted(ids)
    same_millisecond = {new_saga_id(start) for _ in range(1000)}
    assert len(same_millisecond) == 1000  # 74 random bits apart
