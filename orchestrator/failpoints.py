"""Crash points for the fault suite: SIGKILL this process at a named point of the engine.

Off unless FAILPOINTS_FILE is set. The file names one point (e.g. `after_invoke:b`); the
process that reaches it deletes the file, so it fires once, and kills its own process
group: no cleanup, no flush, exactly as a crash or `kill -9` at that line would.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

POINTS = tuple(f"{when}_{action}" for action in ("invoke", "compensate", "cancel")
               for when in ("before", "after"))


class Failpoints:
    """Fires the point named in `path`, if any; a no-op when `path` is None."""

    def __init__(self, path: str | None) -> None:
        self.path = Path(path) if path else None

    def hit(self, point: str, step: str) -> None:
        if self.path is None:
            return
        try:
            armed = self.path.read_text().strip()
        except FileNotFoundError:
            return
        if armed == f"{point}:{step}":
            self.path.unlink(missing_ok=True)
            os.killpg(os.getpgid(0), signal.SIGKILL)
