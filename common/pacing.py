"""How long to wait before trying again: one rule (exponential backoff with jitter) for both models.

The orchestrator waits in-process, with tenacity; an inbox or an outbox row waits in its
table, so it survives a restart. Both take the pause from the same tenacity strategy.
"""

from __future__ import annotations

from tenacity import RetryCallState, Retrying, wait_exponential_jitter


class Pacing:
    """Pauses between attempts: `backoff` seconds doubled each time, at most `maximum`, plus up
    to `jitter` seconds at random."""

    def __init__(self, backoff: float, maximum: float, jitter: float) -> None:
        self._wait = wait_exponential_jitter(multiplier=backoff, max=maximum, jitter=jitter)

    def after(self, attempts: int) -> float:
        """Seconds to wait after `attempts` failed attempts."""
        state = RetryCallState(Retrying(), None, (), {})  # the strategies read only the number
        state.attempt_number = max(1, attempts)
        return float(self._wait(state))
