"""Everything a participant runs for the choreographed saga, built from its settings: its inbox,
outbox, relay, inbox worker, transport, the deadline watcher (at the entry), and the sign-up."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import MetaData

from choreography.deadlines import Deadlines, DeadlineWatcher, deadlines_table
from choreography.flow import Flows
from choreography.reactions import Commit, Reactions
from common.db import iso, utcnow
from common.declaration import Service
from common.faults import Sleeps
from common.http import Http
from common.metrics import EVENTS_HANDLED, EVENTS_RECEIVED, REDRIVEN
from common.pacing import Pacing
from common.status import Isolation
from common.tracing import start_saga_trace
from messaging.events import Envelope, Refused
from messaging.inbox import Inbox, InboxRow, inbox_table
from messaging.outbox import Outbox, outbox_table
from messaging.relay import Relay
from messaging.transport import HttpTransport, Transport
from messaging.worker import InboxWorker, Postponed
from participant.records import RecordStore

log = logging.getLogger(__name__)

# Publishers to the broker at once: each waits for the broker's confirm of every event it
# publishes (measured: 8 lanes took 1.5 times the sagas 4 did, at 16 clients).
BROKER_LANES = 8


def choreography_tables(metadata: MetaData) -> None:
    """The tables a participant keeps for the choreographed saga, beside its own rows."""
    outbox_table(metadata)
    inbox_table(metadata)
    deadlines_table(metadata)


class ChoreographedService:
    """Everything a participant runs for the choreographed saga, built from its settings."""

    def __init__(self, spec: Service, flows: Flows, config: dict[str, Any], records: RecordStore,
                 metadata: MetaData, sleeps: Sleeps) -> None:
        engine = records.engine
        self.spec = spec
        self.flows = flows
        self.config = config
        self.inbox = Inbox(engine, metadata.tables["inbox"], handover=config["CHOREOGRAPHY_HANDOVER"])
        self.outbox = Outbox(engine, metadata.tables["outbox"], handover=config["CHOREOGRAPHY_HANDOVER"])
        self.deadlines = Deadlines(engine, metadata.tables["saga_deadlines"])
        self.transport, destinations = self._transport(config)
        pacing = Pacing(config["RETRY_BACKOFF"], config["RETRY_BACKOFF_MAX"], config["RETRY_JITTER"])
        self.reactions = Reactions(spec, flows, config, records, self.inbox, self.outbox, self.deadlines,
                                   self.transport, sleeps)
        self.worker = InboxWorker(spec.name, self.inbox, self.reactions, pacing,
                                  threads=config["INBOX_THREADS"], poll=config["CHOREOGRAPHY_POLL"])
        self.relay = Relay(spec.name, self.outbox, self.transport, destinations, Pacing(0.2, 10.0, 0.2),
                           max_attempts=config["RELAY_MAX_ATTEMPTS"], poll=config["CHOREOGRAPHY_POLL"],
                           lanes=BROKER_LANES if config["BROKER_URL"] else 1)
        self.reactions.committed = self._committed
        self.watcher = (DeadlineWatcher(self.deadlines, self.reactions.time_out, interval=0.2,
                                        stuck_after=config["CHOREOGRAPHY_STUCK_AFTER"])
                        if self.reactions.is_entry else None)

    def _committed(self, commit: Commit) -> None:
        if commit.outbox:
            self.relay.push(commit.outbox)
        if commit.inbox:
            self.worker.hand(commit.inbox)

    def _transport(self, config: dict[str, Any]) -> tuple[Transport, list[str]]:
        if config["BROKER_URL"]:
            from messaging.rabbitmq import BrokerTransport

            broker = BrokerTransport(config["BROKER_URL"], config["BROKER_NAMESPACE"],
                                     config["SERVICE_SECRET"], self.spec.name, self.flows.routes)
            return broker, ["broker"]
        urls = {**config["PEER_URLS"], "observer": config["OBSERVER_URL"]}
        http = HttpTransport(urls, Http(config["SERVICE_SECRET"]), max_body=config["MAX_CONTENT_LENGTH"])
        return http, [service for service in self.flows.services if service != self.spec.name] + ["observer"]

    def start(self) -> None:
        """Start the relay, the inbox worker, the deadline watcher (at A) and the broker consumer."""
        self.relay.start()
        self.worker.start()
        if self.watcher is not None:
            self.watcher.start()
        if self.config["BROKER_URL"]:
            from messaging.rabbitmq import BrokerConsumer

            BrokerConsumer(self.config["BROKER_URL"], self.config["BROKER_NAMESPACE"],
                           queue=f"service_{self.spec.name}", receive=self.receive,
                           secret=self.config["SERVICE_SECRET"], party=self.spec.name,
                           routes=self.flows.routes).start()

    def receive(self, envelopes: list[Envelope]) -> list[bool | Refused]:
        """Events from other services (HTTP or broker): each one this service takes into the
        inbox, once, all in one commit, then handled at once; for each, True if new, False if a
        repeat, or why it was refused (a type this service does not take)."""
        outcomes: list[bool | Refused] = []
        taken: list[Envelope] = []
        for envelope in envelopes:
            try:
                self.reactions.reaction_to(envelope)
            except Refused as error:
                outcomes.append(error)
                continue
            outcomes.append(True)
            taken.append(envelope)
        rows = iter(self._take_in(taken) if taken else [])
        for index, envelope in enumerate(envelopes):
            if outcomes[index] is True:
                row, handled = next(rows)
                result = "duplicate" if row is None else "new"
                EVENTS_RECEIVED.labels(self.spec.name, envelope.type, result).inc()
                outcomes[index] = row is not None
                if handled:
                    EVENTS_HANDLED.labels(self.spec.name, envelope.type, "ok").inc()
                elif row is not None:
                    self.worker.hand([row])
        return outcomes

    def _take_in(self, taken: list[Envelope]) -> list[tuple[InboxRow | None, bool]]:
        """Take events into the inbox in one commit, each once: for each, its row (None if it
        came before) and whether it was handled there too. Those this service may handle at
        once (`handles_at_once`) are: a hop is then one commit, not two, and no worker thread
        waited for. If one of them cannot be handled now (held back by a lock, refused,
        failing), that commit is undone, and the events are taken in alone, for the worker,
        which handles or refuses each as it always does."""
        here = [self.reactions.handles_at_once(envelope) for envelope in taken]
        if any(here):
            try:
                with self.reactions.commit() as commit:
                    rows = [self.inbox.add(commit.connection, envelope, handled=now)
                            for envelope, now in zip(taken, here, strict=True)]
                    for envelope, row, now in zip(taken, rows, here, strict=True):
                        if row is not None and now:  # every event is in the inbox before any is handled
                            self.reactions.handle_in(commit, envelope)
                return [(row, row is not None and now) for row, now in zip(rows, here, strict=True)]
            except Exception as error:  # noqa: BLE001 - the worker handles them, as without this path
                log.debug("%d event(s) taken in for the worker, not handled on arrival: %s: %s", len(taken),
                          type(error).__name__, error)
        return [(row, False) for row in self.inbox.receive(taken)]

    def sign_up(self, saga_input: dict[str, str], faults: dict[str, str], saga_id: str,
                isolation: Isolation = Isolation.NONE) -> Envelope:
        """The entry: start the clock and take the sign-up in as our own event, under the
        default definition, and apply it there and then (unless a fault asks this step to act
        something out, or another saga's semantic lock holds it back: then the inbox worker
        does): all in one commit."""
        flow = self.flows.default
        deadline = utcnow() + timedelta(seconds=self.config["CHOREOGRAPHY_DEADLINE"])
        traceparent = start_saga_trace(f"saga {flow.key.partition('@')[0]} (choreography)", saga_id)
        payload: dict[str, object] = {"input": saga_input, "fail": faults, "deadline": iso(deadline),
                                      "definition": flow.key}
        if isolation is not Isolation.NONE:
            payload["isolation"] = isolation.value
        envelope = Envelope(flow.requested, saga_id, self.spec.name, payload, traceparent=traceparent)
        here = self.spec.name not in faults  # ours to handle, here and now: not the worker's
        try:
            self._take_sign_up(envelope, deadline, here)
        except Postponed:  # held back by a lock: the sign-up is taken in, the worker waits for it
            here = False
            self._take_sign_up(envelope, deadline, here)
        if here:
            EVENTS_HANDLED.labels(self.spec.name, envelope.type, "ok").inc()
        return envelope

    def _take_sign_up(self, envelope: Envelope, deadline: datetime, here: bool) -> None:
        reactions = self.reactions
        with reactions.commit() as commit:
            self.deadlines.start(commit.connection, envelope.saga_id, deadline)
            if reactions.publish(commit, envelope, handle_here=here):
                reactions.handle_in(commit, envelope)

    def dead_letters(self) -> list[dict[str, object]]:
        return [*self.outbox.dead_letters(), *self.inbox.dead_letters()]

    def redrive(self, where: str, event_id: str) -> int:
        """Send (outbox) or handle (inbox) a dead-lettered event again; how many deliveries or
        handlings that starts (0: nothing was dead-lettered under that id: idempotent). `broker`:
        an event of ours the broker delivered and a consumer refused, published again."""
        if where == "inbox":
            again = int(self.inbox.redrive(event_id))
            self.worker.wake()
        else:
            again = self.outbox.redrive(event_id, delivered_too=where == "broker")
            self.relay.wake()
        if again:
            REDRIVEN.labels(self.spec.name, where).inc()
            log.warning("dead-lettered event %s redriven from the %s (%d)", event_id, where, again)
        return again
