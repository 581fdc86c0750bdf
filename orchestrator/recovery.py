"""The recovery loop: claim unfinished sagas whose lease ran out and drive them to the end."""

from __future__ import annotations

import logging
import threading
import time
from datetime import timedelta

from common.db import utcnow
from common.metrics import RECOVERY_CLAIMS
from orchestrator.engine import SagaEngine
from orchestrator.instances import instance_prefix, parse_instance, process_alive
from orchestrator.model import Run

log = logging.getLogger("orchestrator.recovery")


class Recovery:
    """Every `interval` seconds, finish the sagas no live orchestrator holds.

    It also gives each COMPENSATION_FAILED saga another round once it has rested
    `retry_after` seconds, up to `max_rounds` rounds (a service that was down may be back).
    """

    def __init__(self, engine: SagaEngine, interval: float, retry_after: float,
                 max_rounds: int) -> None:
        self.engine = engine
        self.interval = interval
        self.retry_after = timedelta(seconds=retry_after)
        self.max_rounds = max_rounds
        self._thread = threading.Thread(target=self._run, name="saga-recovery", daemon=True)

    def start(self) -> None:
        self.take_over_dead_predecessors()
        self._thread.start()

    def take_over_dead_predecessors(self) -> int:
        """Sagas leased to an instance of our name on this host whose process is gone (we are
        its restart) are recovered at once, not when their leases run out. A live instance's
        (a second worker, a second orchestrator under the same name) are left alone."""
        mine = parse_instance(self.engine.owner)
        dead = [owner for owner in self.engine.store.lease_owners(instance_prefix(mine))
                if owner != self.engine.owner and not process_alive(parse_instance(owner))]
        expired = self.engine.store.expire_leases_of(dead)
        if expired:
            log.info("taking back %d unfinished saga(s) from dead instance(s) %s", expired, ", ".join(dead))
        return expired

    def scan_once(self) -> int:
        """Claim and resume what is claimable now; how many sagas were claimed."""
        store, owner = self.engine.store, self.engine.owner
        claimed = 0
        for saga_id in store.claimable():
            # A saga queued here past its lease is ours still: never start a second driver.
            if not self.engine.busy(saga_id) and store.claim(saga_id, owner):
                claimed += 1
                RECOVERY_CLAIMS.labels("resumed").inc()
                log.info("saga %s: claimed for recovery", saga_id)
                self.engine.submit(saga_id, Run.RESUMED)
        quiet_since = utcnow() - self.retry_after
        for saga_id in store.failed_compensations(quiet_since, self.max_rounds):
            if store.reopen_failed_compensation(saga_id, owner, quiet_since, self.max_rounds):
                claimed += 1
                RECOVERY_CLAIMS.labels("reopened").inc()
                log.info("saga %s: compensation failed before; trying it again", saga_id)
                self.engine.submit(saga_id, Run.REOPENED)
        return claimed

    def _run(self) -> None:
        while True:
            try:
                self.scan_once()
            except Exception:  # noqa: BLE001 - the loop must outlive a database hiccup
                log.exception("recovery scan failed; trying again in %s s", self.interval)
            time.sleep(self.interval)
