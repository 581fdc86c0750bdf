"""What the dashboard's charts draw: sagas finished per second by outcome, and p50/p99 of how long
they took, in buckets over the last minutes. One function for both models' records."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any

from common.db import iso

OUTCOMES = ("COMPLETED", "COMPENSATED", "COMPENSATION_FAILED")


def percentile(sorted_values: list[float], fraction: float) -> float | None:
    """The value below which `fraction` of them lie (nearest rank); None for none."""
    if not sorted_values:
        return None
    rank = max(1, -(-len(sorted_values) * fraction // 1))  # ceil
    return sorted_values[int(rank) - 1]


def buckets(finished: Iterable[tuple[str, datetime, datetime]], until: datetime, minutes: int,
            bucket_seconds: int) -> list[dict[str, Any]]:
    """`finished` (status, created, finished) grouped into buckets ending at `until`, oldest first:
    each with sagas per second by outcome and the p50/p99 duration in milliseconds."""
    width = timedelta(seconds=bucket_seconds)
    count = minutes * 60 // bucket_seconds
    start = until - count * width
    grouped: list[list[tuple[str, float]]] = [[] for _ in range(count)]
    for status, created, done in finished:
        index = int((done - start) / width)
        if 0 <= index < count:
            grouped[index].append((status, (done - created).total_seconds() * 1000))
    result = []
    for index, rows in enumerate(grouped):
        durations = sorted(ms for _, ms in rows)
        result.append({"start": iso(start + index * width),
                       **{o.lower(): round(sum(1 for s, _ in rows if s == o) / bucket_seconds, 3)
                          for o in OUTCOMES},
                       "p50_ms": percentile(durations, 0.5), "p99_ms": percentile(durations, 0.99)})
    return result
