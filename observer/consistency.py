"""The observer as a source for the consistency check (`common.consistency`): each
choreographed saga, what its rows should say, and whether it needs attention."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select

from choreography.flow import Flow
from common.consistency import Part, SagaSnapshot
from common.db import reading, utcnow
from common.status import Model, SagaStatus
from observer.observer import Observer
from observer.tables import choreo_sagas


def parts(flow: Flow) -> tuple[Part, ...]:
    """Where each step of a saga of this flow keeps its row."""
    return tuple(Part(step, step, flow.fields[step]) for step in flow.steps)


class ChoreographedSagas:
    """The observer as a source for the consistency check. The observer learns of a saga a
    moment after its sign-up is taken in, so `exists` also asks the entry service, which
    records every sign-up before anything applies (`entry_knows`). A saga still unfinished
    `stuck_after` seconds past its deadline needs attention: an event it needs may have been
    dead-lettered."""

    model = Model.CHOREOGRAPHY

    def __init__(self, observer: Observer, entry_knows: Callable[[str], bool], stuck_after: float) -> None:
        self.observer = observer
        self.entry_knows = entry_knows
        self.stuck_after = timedelta(seconds=stuck_after)

    COLUMNS = (choreo_sagas.c.saga_id, choreo_sagas.c.status, choreo_sagas.c.input, choreo_sagas.c.deadline,
               choreo_sagas.c.error, choreo_sagas.c.definition)

    def page(self, after: str, limit: int) -> list[SagaSnapshot]:
        query = (select(*self.COLUMNS).where(choreo_sagas.c.saga_id > after)
                 .order_by(choreo_sagas.c.saga_id).limit(limit))
        with reading(self.observer.engine) as connection:
            return [self._snapshot(*row) for row in connection.execute(query)]

    def snapshot(self, saga_id: str) -> SagaSnapshot | None:
        query = select(*self.COLUMNS).where(choreo_sagas.c.saga_id == saga_id)
        with reading(self.observer.engine) as connection:
            row = connection.execute(query).first()
        return None if row is None else self._snapshot(*row)

    def _snapshot(self, saga_id: str, status: str, saga_input: str | None, deadline: datetime | None,
                  error: str | None, definition: str | None) -> SagaSnapshot:
        # Until the observer has seen the sign-up itself, it cannot judge the saga's rows.
        known = SagaStatus(status) if saga_input else SagaStatus.RUNNING
        values = json.loads(saga_input or "{}")
        flow = self.observer.flow(definition)
        attention = None
        if known is SagaStatus.COMPENSATION_FAILED:
            attention = f"a compensation failed: {self._undo_error(saga_id, flow) or error}"
        elif not known.finished and deadline is not None and utcnow() - deadline > self.stuck_after:
            late = (utcnow() - deadline).total_seconds()
            attention = (f"still {known.value} {late:.0f} s after its deadline: an event it needs may "
                         f"be dead-lettered (redrive it; {flow.entry.upper()} sends {flow.timed_out} again)")
        return SagaSnapshot(saga_id, known, values if isinstance(values, dict) else {}, parts(flow),
                            attention)

    def _undo_error(self, saga_id: str, flow: Flow) -> str | None:
        """What the failed compensation reported (its undo-failed event's error), once seen; the
        saga's own error is the step failure that started the compensation."""
        saga = self.observer.get(saga_id) or {}
        return next((str(event["error"]) for event in saga.get("events", [])
                     if event["type"] in flow.undo_failed and event.get("error")), None)

    def exists(self, saga_id: str) -> bool:
        return self.observer.get(saga_id) is not None or self.entry_knows(saga_id)

    def recent(self, limit: int, status: SagaStatus | None) -> list[dict[str, Any]]:
        return self.observer.recent(limit, status)
