"""The recovery loop: claim unfinished sagas whose lease ran out and drive them to the end."""

from __future__ import annotations

import logging
import threading
from concurrent.futures import ThreadPoolExecutor

from orchestrator.engine import SagaEngine

log = logging.getLogger("orchestrator.recovery")


class Recovery:
    """Every `interval` seconds, finish the sagas no live orchestrator holds."""

    def __init__(self, engine: SagaEngine, executor: ThreadPoolExecutor, interval: float) -> None:
        self.engine = engine
        self.executor = executor
        self.interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="saga-recovery", daemon=True)

    def start(self) -> None:
        # Leases under our own id were held by the process we replace, which is dead.
        expired = self.engine.store.expire_leases_of(self.engine.owner)
        if expired:
            log.info("taking back %d unfinished saga(s) leased to %s", expired, self.engine.owner)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def scan_once(self) -> int:
        """Claim and resume what is claimable now; how many sagas were claimed."""
        claimed = 0
        for saga_id in self.engine.store.claimable():
            if self.engine.store.claim(saga_id, self.engine.owner):
                claimed += 1
                log.info("saga %s: claimed for recovery", saga_id)
                self.executor.submit(self.engine.drive_logged, saga_id, True)
        return claimed

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.scan_once()
            except Exception:  # noqa: BLE001 - the loop must outlive a database hiccup
                log.exception("recovery scan failed; trying again in %s s", self.interval)
            self._stop.wait(self.interval)
