"""The broker transport: RabbitMQ, with pika (the client RabbitMQ's own tutorials use).

One durable topic exchange carries every event, routed by its type. Each service has one
durable queue, bound to the types it reacts to; the observer's is bound to all of them.
Publishing waits for the broker's confirm (the relay marks the outbox row only then);
consuming acknowledges only after the event is committed to the inbox. Every process declares
the whole topology when it connects (declarations are idempotent), so no event is published
before its queues exist.

An event proves who published it: the message's `user_id` is the publisher's broker account
(RabbitMQ refuses a message whose user_id is not the connection's user), which must be the
account of the service that owns the event's type; and it carries an HMAC of its body made with
SERVICE_SECRET, so that a broker account alone is not enough. What fails either check, or
cannot be read, or is not an event this service takes, is never handled: it goes to the
dead-letter queue with the reason, which the observer reads.
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

import pika
from pika.adapters.blocking_connection import BlockingChannel
from pika.exceptions import AMQPError, NackError, UnroutableError
from pika.spec import Basic, BasicProperties

from common.metrics import DEAD_LETTERS, EVENTS_REFUSED
from common.pacing import Pacing
from common.signing import BadSignature, sign_event, verify_event
from messaging.events import Envelope, Refused
from messaging.routes import Routes
from messaging.transport import Delivery, Received

log = logging.getLogger(__name__)

BROKER = "broker"
OBSERVER_QUEUE = "observer"
PREFETCH = 32
GATHER = 0.002  # seconds a consumer waits for more messages to take in with those it has
SERVED_A_WHILE = 10.0  # seconds a consumer's connection served before its reconnect pause starts over
RECONNECT = Pacing(0.2, 5.0, 0.0)  # a consumer's pause before it connects again
SIGNATURE_HEADER = "x-saga-signature"  # the HMAC of the body, with SERVICE_SECRET
REFUSED_BY, REFUSED_AS, REFUSED_BECAUSE = "x-refused-by", "x-refused-as", "x-refused-because"
PUBLISHED_BY = "x-published-by"


@dataclass(frozen=True)
class Topology:
    """The names, under one namespace (tests give each run its own), and the bindings `routes` make."""

    namespace: str
    routes: Routes

    @property
    def exchange(self) -> str:
        return f"{self.namespace}.events"

    @property
    def dead_exchange(self) -> str:
        return f"{self.namespace}.dead"

    @property
    def dead_queue(self) -> str:
        return f"{self.namespace}.dead-letters"

    def queue(self, name: str) -> str:
        return f"{self.namespace}.{name}"

    def bindings(self) -> dict[str, list[str]]:
        """Queue -> the event types routed to it: what each service reacts to (from the others;
        its own events it takes straight into its inbox), and everything for the observer."""
        queues = {self.queue(f"service_{s}"): list(types) for s, types in self.routes.takes.items()}
        queues[self.queue(OBSERVER_QUEUE)] = ["#"]
        return queues

    def declare(self, channel: BlockingChannel) -> None:
        channel.exchange_declare(self.exchange, exchange_type="topic", durable=True)
        channel.exchange_declare(self.dead_exchange, exchange_type="fanout", durable=True)
        channel.queue_declare(self.dead_queue, durable=True)
        channel.queue_bind(self.dead_queue, self.dead_exchange)
        for queue, types in self.bindings().items():
            channel.queue_declare(queue, durable=True, arguments=self.queue_arguments)
            for event_type in types:
                channel.queue_bind(queue, self.exchange, routing_key=event_type)

    @property
    def queue_arguments(self) -> dict[str, str]:
        """What the broker itself dead-letters (a message over a limit, say) goes where ours go."""
        return {"x-dead-letter-exchange": self.dead_exchange}

    def definitions(self, vhost: str) -> dict[str, list[dict[str, Any]]]:
        """The same topology as RabbitMQ definitions, for an administrator to make before any
        service connects (a service's account may not create another's queue: a queue with a
        dead-letter exchange can only be made by an account that may read it)."""
        exchanges = [(self.exchange, "topic"), (self.dead_exchange, "fanout")]
        queues = [(self.dead_queue, {}), *((q, self.queue_arguments) for q in self.bindings())]
        bindings = [(self.dead_exchange, self.dead_queue, ""),
                    *((self.exchange, q, t) for q, types in self.bindings().items() for t in types)]
        return {
            "exchanges": [{"name": name, "vhost": vhost, "type": kind, "durable": True, "auto_delete": False,
                           "internal": False, "arguments": {}} for name, kind in exchanges],
            "queues": [{"name": name, "vhost": vhost, "durable": True, "auto_delete": False,
                        "arguments": arguments} for name, arguments in queues],
            "bindings": [{"source": source, "vhost": vhost, "destination": queue, "destination_type": "queue",
                          "routing_key": key, "arguments": {}} for source, queue, key in bindings],
        }


def account_name(namespace: str, party: str) -> str:
    """The broker user of a party (a service, or the observer) under a namespace: `saga-a`."""
    return f"{namespace}-{party}"


@dataclass(frozen=True)
class Identity:
    """Who this process is on the broker (the user its URL names), and so whose account must
    have published each event: the owner's, when every party has its own account; when all
    share one (guest, for a quick local try), that one, and only the HMAC says it was a service."""

    user: str
    namespace: str
    party: str  # "a", "b", "c" or "observer"
    routes: Routes

    @classmethod
    def of(cls, url: str, namespace: str, party: str, routes: Routes) -> Identity:
        return cls(unquote(urlsplit(url).username or "guest"), namespace, party, routes)

    @property
    def own_account(self) -> bool:
        return self.user == account_name(self.namespace, self.party)

    def publisher_of(self, event_type: str) -> str:
        if not self.own_account:
            return self.user
        return account_name(self.namespace, self.routes.sources[event_type])


def connect(url: str, name: str) -> pika.BlockingConnection:
    """A connection the broker lists under `name` (its namespace first: which run, which part)."""
    parameters = pika.URLParameters(url)
    parameters.client_properties = {"connection_name": name}
    parameters.heartbeat = 30
    parameters.blocked_connection_timeout = 10
    parameters.socket_timeout = 5
    parameters.connection_attempts = 1
    return pika.BlockingConnection(parameters)


def keep_consuming(url: str, name: str, consume: Callable[[pika.BlockingConnection], None]) -> None:
    """Connect as `name` and `consume` on the connection, for good: whatever ends it (the broker
    gone, an error of ours), what is left of the connection is closed (its unacknowledged
    messages go back on their queue) and another is made, after a pause that grows to 5 s (and
    starts over once a connection has served a while: one that fails at once, again and again,
    is not retried five times a second)."""
    failures = 0  # in a row, of connections that did not serve a while
    while True:
        connection, served_since, failure = None, 0.0, None
        try:
            connection = connect(url, name)
            served_since = time.monotonic()
            consume(connection)
        except Exception as error:  # noqa: BLE001 - keep consuming whatever happened
            failure = error
        finally:
            if connection is not None and connection.is_open:
                with contextlib.suppress(AMQPError, OSError):
                    connection.close()
        served = connection is not None and time.monotonic() - served_since > SERVED_A_WHILE
        failures = 1 if served else failures + 1
        pause = RECONNECT.after(failures)
        if isinstance(failure, (AMQPError, OSError)):
            log.warning("broker connection of %s lost (%s); reconnecting in %.1f s", name,
                        type(failure).__name__, pause)
        else:
            log.error("%s stopped; reconnecting in %.1f s", name, pause, exc_info=failure)
        time.sleep(pause)


def warn_if_shared(identity: Identity) -> None:
    if not identity.own_account:
        log.warning("the broker account %s is not %s's own (%s): the broker cannot tell which service "
                    "published an event; only SERVICE_SECRET's signature and the event's source are "
                    "checked", identity.user, identity.party,
                    account_name(identity.namespace, identity.party))


class BrokerTransport:
    """The relay's side: publish each event, as this service's account and signed, once the
    broker confirms it (or say why not)."""

    def __init__(self, url: str, namespace: str, secret: str, party: str, routes: Routes) -> None:
        self.url = url
        self.topology = Topology(namespace, routes)
        self.identity = Identity.of(url, namespace, party, routes)
        self.secret = secret
        self._local = threading.local()
        warn_if_shared(self.identity)

    def destinations(self, subscribers: tuple[str, ...]) -> list[str]:
        return [BROKER]  # the bindings fan it out

    def _channel(self) -> BlockingChannel:
        channel: BlockingChannel | None = getattr(self._local, "channel", None)
        if channel is None or channel.is_closed:
            connection = connect(self.url, f"{self.topology.namespace} publisher")
            channel = connection.channel()
            self.topology.declare(channel)
            channel.confirm_delivery()  # basic_publish now waits for the broker's ack
            self._local.connection, self._local.channel = connection, channel
        return channel

    def deliver(self, destination: str, envelopes: list[str]) -> list[Delivery]:
        """Each in turn, each once the broker confirms it (the relay's lanes publish side by side)."""
        return [self._publish(envelope) for envelope in envelopes]

    def _publish(self, envelope: str) -> Delivery:
        body = envelope.encode()
        event = json.loads(envelope)
        headers = {SIGNATURE_HEADER: sign_event(self.secret, body)}
        if event.get("traceparent"):
            headers["traceparent"] = event["traceparent"]
        properties = BasicProperties(content_type="application/json", delivery_mode=2,
                                     message_id=event["event_id"], type=event["type"],
                                     user_id=self.identity.user, headers=headers)
        try:
            self._channel().basic_publish(self.topology.exchange, routing_key=event["type"],
                                          body=body, properties=properties, mandatory=True)
        except (UnroutableError, NackError) as error:
            return Delivery(False, error=f"the broker did not take it: {type(error).__name__}")
        except (AMQPError, OSError) as error:
            self.close()
            return Delivery(False, error=f"broker unreachable: {type(error).__name__}: {error}")
        return Delivery(True)

    def close(self) -> None:
        connection = getattr(self._local, "connection", None)
        self._local.connection = self._local.channel = None
        if connection is not None and connection.is_open:
            with contextlib.suppress(AMQPError, OSError):
                connection.close()


def check_message(identity: Identity, secret: str, routing_key: str, properties: BasicProperties,
                  body: bytes) -> Envelope:
    """The event a message holds, once it has proved who published it; Refused says why not."""
    routes = identity.routes
    envelope = Envelope.loads(body, routes.types, routes.sources)  # malformed, or not its source's
    if routing_key != envelope.type or properties.type not in (None, envelope.type):
        raise Refused(f"routed as {routing_key!r}, typed {properties.type!r}, but it is a {envelope.type}",
                      "malformed")
    publisher = identity.publisher_of(envelope.type)
    if properties.user_id != publisher:
        raise Refused(f"a {envelope.type} is published by the account {publisher}, not by "
                      f"{properties.user_id!r}", "wrong_publisher")
    try:
        verify_event(secret, (properties.headers or {}).get(SIGNATURE_HEADER), body)
    except BadSignature as error:
        raise Refused(str(error), "unsigned") from None
    return envelope


class BrokerConsumer:
    """A thread that takes events from one queue into `receive` (which commits them), what has
    arrived together in one go, and acknowledges them only afterwards; it reconnects by itself
    when the broker goes away.

    An event that proves no publisher (`check_message`), or that `receive` refuses, is sent to
    the dead letters with the reason and acknowledged: never handled, never tried again."""

    def __init__(self, url: str, namespace: str, queue: str, receive: Received,
                 secret: str, party: str, routes: Routes) -> None:
        self.url = url
        self.topology = Topology(namespace, routes)
        self.queue = self.topology.queue(queue)
        self.receive = receive
        self.secret = secret
        self.identity = Identity.of(url, namespace, party, routes)
        self._thread = threading.Thread(target=self._run, name=f"broker-{queue}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        keep_consuming(self.url, f"{self.topology.namespace} consumer {self.queue}", self._consume)

    def _consume(self, connection: pika.BlockingConnection) -> None:
        channel = connection.channel()
        self.topology.declare(channel)
        channel.confirm_delivery()  # a refused event is dead-lettered before it is acked
        channel.basic_qos(prefetch_count=PREFETCH)
        log.info("consuming %s", self.queue)
        arrived: list[tuple[Basic.Deliver, BasicProperties, bytes]] = []
        channel.basic_consume(self.queue, lambda _, method, properties, body, into=arrived:
                              into.append((method, properties, body)))
        while True:
            # Asleep until something arrives (waking for heartbeats), then a moment more for
            # what comes with it: one commit and one acknowledgement for them all.
            connection.process_data_events(time_limit=1)
            if arrived:
                connection.process_data_events(time_limit=GATHER)
                taking, arrived[:] = arrived[:], []
                self._take(channel, taking)

    def _take(self, channel: BlockingChannel,
              arrived: list[tuple[Basic.Deliver, BasicProperties, bytes]]) -> None:
        """Check what arrived together, dead-letter (and acknowledge) what proves no publisher,
        take the good events in (one commit), then acknowledge them; if the commit fails, the
        broker keeps those (and only those: a refused one is not dead-lettered twice)."""
        taken: list[tuple[Envelope, BasicProperties, bytes]] = []
        last = None  # the delivery tag of the last message taken
        for method, properties, body in arrived:
            try:
                envelope = check_message(self.identity, self.secret, str(method.routing_key), properties,
                                         body)
            except Refused as error:
                self._dead_letter(channel, properties, body, error)
                channel.basic_ack(method.delivery_tag)
                continue
            taken.append((envelope, properties, body))
            last = method.delivery_tag
        if last is None:
            return
        try:
            outcomes: list[bool | Refused] = list(self.receive([e for e, _, _ in taken]))
        except Exception:  # noqa: BLE001 - not committed (the database, say): the broker keeps them
            log.exception("could not take %d message(s) from %s; they stay on the queue", len(taken),
                          self.queue)
            time.sleep(1)
            channel.basic_nack(last, multiple=True, requeue=True)
            return
        for (_, properties, body), outcome in zip(taken, outcomes, strict=True):
            if isinstance(outcome, Refused):
                self._dead_letter(channel, properties, body, outcome)
        channel.basic_ack(last, multiple=True)

    def _dead_letter(self, channel: BlockingChannel, properties: BasicProperties, body: bytes,
                     error: Refused) -> None:
        """To the dead-letter queue, with who refused it and why (the broker's own dead-lettering
        keeps no reason); the user_id it came with goes in a header (ours would not match it)."""
        log.error("refused a message on %s, to the dead letters: %s", self.queue, error)
        headers = {**(properties.headers or {}), REFUSED_BY: self.queue, REFUSED_AS: error.kind,
                   REFUSED_BECAUSE: str(error)[:1000], PUBLISHED_BY: properties.user_id}
        channel.basic_publish(self.topology.dead_exchange, "", body, BasicProperties(
            content_type=properties.content_type, delivery_mode=2, message_id=properties.message_id,
            type=properties.type, headers=headers))
        EVENTS_REFUSED.labels(self.identity.party, error.kind).inc()
        DEAD_LETTERS.labels(self.identity.party, "broker").inc()


class DeadLetterConsumer:
    """The observer's reader of the dead-letter queue: each letter into `receive`, then acked."""

    def __init__(self, url: str, namespace: str, receive: Callable[[DeadLetter], Any],
                 routes: Routes) -> None:
        self.url = url
        self.topology = Topology(namespace, routes)
        self.receive = receive
        self._thread = threading.Thread(target=self._run, name="broker-dead-letters", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        keep_consuming(self.url, f"{self.topology.namespace} consumer {self.topology.dead_queue}",
                       self._consume)

    def _consume(self, connection: pika.BlockingConnection) -> None:
        channel = connection.channel()
        self.topology.declare(channel)
        channel.basic_qos(prefetch_count=PREFETCH)
        channel.basic_consume(self.topology.dead_queue, self._on_message, auto_ack=False)
        channel.start_consuming()

    def _on_message(self, channel: BlockingChannel, method: Basic.Deliver, properties: BasicProperties,
                    body: bytes) -> None:
        assert method.delivery_tag is not None
        try:
            self.receive(DeadLetter.of(body, properties))
        except Exception:  # noqa: BLE001 - not recorded (the database, say): the broker keeps it
            log.exception("could not record a dead letter; it stays on the queue")
            time.sleep(1)
            channel.basic_nack(method.delivery_tag, requeue=True)
            return
        channel.basic_ack(method.delivery_tag)


@dataclass(frozen=True)
class DeadLetter:
    """A message from the dead-letter queue: its body (which may not even be an event), the
    queue that refused it, why in a word (`reason`: our consumers' kind of refusal, or the
    broker's x-death reason) and in full (`detail`), and the account that published it."""

    body: str
    queue: str
    reason: str
    detail: str | None = None
    published_by: str | None = None

    @classmethod
    def of(cls, body: bytes, properties: BasicProperties) -> DeadLetter:
        headers = properties.headers or {}
        deaths = headers.get("x-death") or [{}]
        death = deaths[0] if isinstance(deaths, list) and deaths else {}

        def text(value: Any) -> str | None:
            if isinstance(value, bytes):
                value = value.decode("utf-8", "replace")
            return None if value is None else str(value)

        return cls(body.decode("utf-8", "replace")[:4000],
                   text(headers.get(REFUSED_BY) or death.get("queue")) or "",
                   (text(headers.get(REFUSED_AS) or death.get("reason")) or "rejected")[:64],
                   text(headers.get(REFUSED_BECAUSE)), text(headers.get(PUBLISHED_BY)))


def purge(url: str, namespace: str, routes: Routes) -> None:
    """Delete a namespace's exchanges and queues (tests give each run its own)."""
    topology = Topology(namespace, routes)
    connection = connect(url, f"{namespace} purge")
    try:
        channel = connection.channel()
        for queue in [*topology.bindings(), topology.dead_queue]:
            channel.queue_delete(queue)
        channel.exchange_delete(topology.exchange)
        channel.exchange_delete(topology.dead_exchange)
    finally:
        connection.close()
