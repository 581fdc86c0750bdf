"""The orchestrator's recent log lines, kept in memory for the dashboard's live log view."""

from __future__ import annotations

import logging
import re
import threading
from collections import deque
from typing import Any

from common.db import iso, utcnow
from common.logs import escape

SAGA_ID = re.compile(r"saga ([0-9a-f]{32})")


class LogBuffer(logging.Handler):
    """Keeps the last `capacity` records, each with a sequence number to read on from."""

    def __init__(self, capacity: int = 2000) -> None:
        super().__init__(logging.INFO)
        self.lines: deque[dict[str, Any]] = deque(maxlen=capacity)
        self.sequence = 0
        self.guard = threading.Lock()

    def emit(self, record: logging.LogRecord) -> None:
        message = escape(record.getMessage())
        match = SAGA_ID.search(message)
        with self.guard:
            self.sequence += 1
            self.lines.append({"seq": self.sequence, "at": iso(utcnow()),
                               "level": record.levelname, "logger": record.name,
                               "saga_id": match.group(1) if match else None,
                               "message": message})

    def read(self, after: int = 0, saga_id: str | None = None,
             limit: int = 500) -> list[dict[str, Any]]:
        """Lines newer than `after`, oldest first, optionally of one saga."""
        with self.guard:
            lines = [line for line in self.lines if line["seq"] > after
                     and (saga_id is None or line["saga_id"] == saga_id)]
        return lines[-limit:]
