"""Injected faults: how the orchestrator names them and how a participant acts them out."""

from __future__ import annotations

import logging
import re
import threading
import time
from dataclasses import dataclass
from enum import StrEnum

log = logging.getLogger(__name__)

FAULT_HEADER = "X-Saga-Fault"
ATTEMPT_HEADER = "X-Saga-Attempt"
TIMEOUT_HEADER = "X-Saga-Timeout"

MAX_DELAY_MS = 60_000
MAX_TRANSIENT = 10


class FaultKind(StrEnum):
    """Every fault a participant can be told to act out."""

    BEFORE_COMMIT = "before_commit"  # 500, nothing written
    AFTER_COMMIT = "after_commit"  # commits, then 500
    TIMEOUT = "timeout"  # sleeps past the caller's timeout, then commits (a late commit)
    DELAY = "delay"  # delay:MS — sleeps, then succeeds
    TRANSIENT = "transient"  # transient:N — the first N attempts answer 500
    COMPENSATE_FAIL = "compensate_fail"  # every compensation answers 500
    COMPENSATE_TRANSIENT = "compensate_transient"  # the first N compensation attempts answer 500
    # The isolation lab's own, acted out even with fault injection off, asked only by the lab's
    # signed calls: sleeps LAB_DELAY (a few seconds, bounded), then fails before its commit.
    LAB = "lab"


_WITH_AMOUNT = {FaultKind.DELAY: MAX_DELAY_MS, FaultKind.TRANSIENT: MAX_TRANSIENT,
                FaultKind.COMPENSATE_TRANSIENT: MAX_TRANSIENT}
_PATTERN = re.compile(r"^([a-z_]+)(?::([0-9]{1,6}))?$")

FAULT_MODES = [kind.value + (":N" if kind in _WITH_AMOUNT else "") for kind in FaultKind
               if kind is not FaultKind.LAB]
MAX_LAB_DELAY = 5.0


@dataclass(frozen=True)
class Fault:
    """One injected fault, e.g. `transient:2`."""

    kind: FaultKind
    amount: int = 0

    def __str__(self) -> str:
        return f"{self.kind.value}:{self.amount}" if self.kind in _WITH_AMOUNT else self.kind.value

    def fails_before_commit(self, attempt: int) -> bool:
        """Does this invoke attempt answer 500 without writing anything?"""
        return self.kind in (FaultKind.BEFORE_COMMIT, FaultKind.LAB) or (
            self.kind is FaultKind.TRANSIENT and attempt <= self.amount
        )

    def fails_after_commit(self) -> bool:
        """Does an invoke commit and then answer 500?"""
        return self.kind is FaultKind.AFTER_COMMIT

    def sleep_before_commit(self, caller_timeout: float, late_margin: float, lab_delay: float = 0.0,
                            attempt: int = 1) -> float:
        """Seconds an invoke sleeps before it commits (the lab's: its first attempt only, and
        within the caller's timeout, so that the step fails rather than times out)."""
        if self.kind is FaultKind.DELAY:
            return self.amount / 1000
        if self.kind is FaultKind.LAB:
            return min(lab_delay, MAX_LAB_DELAY, 0.8 * caller_timeout) if attempt == 1 else 0.0
        if self.kind is FaultKind.TIMEOUT:
            return caller_timeout + late_margin
        return 0.0

    def fails_compensation(self, attempt: int) -> bool:
        """Does this compensation attempt answer 500?"""
        return self.kind is FaultKind.COMPENSATE_FAIL or (
            self.kind is FaultKind.COMPENSATE_TRANSIENT and attempt <= self.amount
        )

    # Acting it out: the same for an orchestrator's call and for a choreographed event.

    def before_commit(self, saga_id: str, attempt: int, pause: float, sleeps: Sleeps) -> None:
        """What comes before an apply's commit: sleep `pause` seconds (in one of `sleeps`' slots),
        then fail with nothing written, if this fault says so."""
        if pause:
            sleeps.sleep(saga_id, self, pause, attempt)
        if self.fails_before_commit(attempt):
            raise InjectedFailure(f"{self}: failed before commit, nothing written (attempt {attempt})")

    def after_commit(self, attempt: int) -> None:
        """What comes after an apply's commit: fail, the row written, if this fault says so."""
        if self.fails_after_commit():
            raise InjectedFailure(f"{self}: committed, then failed (attempt {attempt})")

    def undoing(self, what: str, attempt: int) -> None:
        """Before a compensation (or cancel) does anything: fail, if this fault says so."""
        if self.fails_compensation(attempt):
            raise InjectedFailure(f"{self}: {what} failed (attempt {attempt})")


class InjectedFailure(Exception):
    """A fault acted out: the step fails as the saga asked it to."""

    def __str__(self) -> str:
        return f"injected fault {super().__str__()}"


class NoSleepSlot(Exception):
    """Every slot for injected sleeps is taken: the fault is refused at once."""


class Sleeps:
    """A few slots for injected sleeps (FAULT_SLEEP_SLOTS): faults can never take every thread
    from real work; a sleep when all are taken is refused (NoSleepSlot)."""

    def __init__(self, slots: int) -> None:
        self._slots = threading.BoundedSemaphore(slots)

    def sleep(self, saga_id: str, fault: Fault, seconds: float, attempt: int) -> None:
        if not self._slots.acquire(blocking=False):
            log.warning("saga %s: %s refused, every slot for injected sleeps is taken", saga_id, fault)
            raise NoSleepSlot(f"{fault}: every slot for injected sleeps is taken")
        try:
            log.info("saga %s: %s sleeps %g s before its commit (attempt %d)", saga_id, fault, seconds,
                     attempt)
            time.sleep(seconds)
        finally:
            self._slots.release()


def parse_fault(text: str) -> Fault:
    """Parse a mode such as `after_commit` or `delay:500`; ValueError says what is wrong."""
    match = _PATTERN.fullmatch(text.strip()) if isinstance(text, str) else None
    try:
        kind = FaultKind(match.group(1)) if match else None
    except ValueError:
        kind = None
    if match is None or kind is None:
        raise ValueError(f"unknown fault mode {text!r}; modes: {', '.join(FAULT_MODES)}")
    amount_text = match.group(2)
    if kind not in _WITH_AMOUNT:
        if amount_text is not None:
            raise ValueError(f"fault mode {kind.value!r} takes no number")
        return Fault(kind)
    if amount_text is None:
        raise ValueError(f"fault mode {kind.value!r} needs a number: {kind.value}:N")
    amount, limit = int(amount_text), _WITH_AMOUNT[kind]
    if not 1 <= amount <= limit:
        raise ValueError(f"{kind.value}:N needs N from 1 to {limit}")
    return Fault(kind, amount)
