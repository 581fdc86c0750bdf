"""The broker transport: RabbitMQ, with pika (the client RabbitMQ's own tutorials use).

One durable topic exchange carries every event, routed by its type. Each service has one
durable queue, bound to the types it reacts to; the observer's is bound to all of them.
Publishing waits for the broker's confirm (the relay marks the outbox row only then);
consuming acknowledges only after the event is committed to the inbox. What can never be
handled is rejected without requeue and lands, through the dead-letter exchange, in one
dead-letter queue the observer reads. Every process declares the whole topology when it
connects (declarations are idempotent), so no event is published before its queues exist.
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

import pika
from pika.adapters.blocking_connection import BlockingChannel
from pika.exceptions import AMQPError, NackError, UnroutableError
from pika.spec import Basic, BasicProperties

from choreography.events import BadEnvelope, Envelope
from choreography.flow import EVENT_TYPES, SOURCES, STEPS, reactions_of
from choreography.transport import Delivery

log = logging.getLogger(__name__)

BROKER = "broker"
OBSERVER_QUEUE = "observer"
PREFETCH = 32


@dataclass(frozen=True)
class Topology:
    """The names, under one namespace (tests give each run its own)."""

    namespace: str

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
        queues = {self.queue(f"service_{s}"): [t for t in reactions_of(s) if SOURCES.get(t) != s]
                  for s in STEPS}
        queues[self.queue(OBSERVER_QUEUE)] = ["#"]
        return queues

    def declare(self, channel: BlockingChannel) -> None:
        channel.exchange_declare(self.exchange, exchange_type="topic", durable=True)
        channel.exchange_declare(self.dead_exchange, exchange_type="fanout", durable=True)
        channel.queue_declare(self.dead_queue, durable=True)
        channel.queue_bind(self.dead_queue, self.dead_exchange)
        for queue, types in self.bindings().items():
            channel.queue_declare(queue, durable=True,
                                  arguments={"x-dead-letter-exchange": self.dead_exchange})
            for event_type in types:
                channel.queue_bind(queue, self.exchange, routing_key=event_type)


def connect(url: str, name: str) -> pika.BlockingConnection:
    """A connection the broker lists under `name` (its namespace first: which run, which part)."""
    parameters = pika.URLParameters(url)
    parameters.client_properties = {"connection_name": name}
    parameters.heartbeat = 30
    parameters.blocked_connection_timeout = 10
    parameters.socket_timeout = 5
    parameters.connection_attempts = 1
    return pika.BlockingConnection(parameters)


class BrokerTransport:
    """The relay's side: publish each event once the broker confirms it (or say why not)."""

    def __init__(self, url: str, namespace: str) -> None:
        self.url = url
        self.topology = Topology(namespace)
        self._local = threading.local()

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

    def deliver(self, destination: str, envelope: str) -> Delivery:
        body = json.loads(envelope)
        headers = {"traceparent": body["traceparent"]} if body.get("traceparent") else {}
        properties = BasicProperties(content_type="application/json", delivery_mode=2,
                                     message_id=body["event_id"], type=body["type"], headers=headers)
        try:
            self._channel().basic_publish(self.topology.exchange, routing_key=body["type"],
                                          body=envelope.encode(), properties=properties, mandatory=True)
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


class BrokerConsumer:
    """A thread that takes events from one queue into `receive` (which commits them), and
    acknowledges each only afterwards; it reconnects by itself when the broker goes away."""

    def __init__(self, url: str, namespace: str, queue: str, receive: Callable[[Any], Any],
                 dead_letters: bool = False) -> None:
        self.url = url
        self.topology = Topology(namespace)
        self.queue = self.topology.dead_queue if dead_letters else self.topology.queue(queue)
        self.receive = receive
        self.raw = dead_letters  # the dead-letter queue holds what failed to parse: take it as it is
        self._thread = threading.Thread(target=self._run, name=f"broker-{queue}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        pause = 0.2
        while True:
            try:
                connection = connect(self.url, f"{self.topology.namespace} consumer {self.queue}")
                channel = connection.channel()
                self.topology.declare(channel)
                channel.basic_qos(prefetch_count=PREFETCH)
                channel.basic_consume(self.queue, self._on_message, auto_ack=False)
                log.info("consuming %s", self.queue)
                pause = 0.2
                channel.start_consuming()
            except (AMQPError, OSError) as error:
                log.warning("broker connection for %s lost (%s); reconnecting in %.1f s", self.queue,
                            type(error).__name__, pause)
            except Exception:  # noqa: BLE001 - keep consuming whatever happened
                log.exception("consumer of %s failed; reconnecting in %.1f s", self.queue, pause)
            time.sleep(pause)
            pause = min(pause * 2, 5.0)

    def _on_message(self, channel: BlockingChannel, method: Basic.Deliver, properties: BasicProperties,
                    body: bytes) -> None:
        assert method.delivery_tag is not None
        try:
            if self.raw:
                self.receive(DeadLetter.of(body, properties))
            else:
                self.receive(Envelope.loads(body, EVENT_TYPES, SOURCES))
        except BadEnvelope as error:
            log.error("rejected a message on %s, to the dead letters: %s", self.queue, error)
            channel.basic_nack(method.delivery_tag, requeue=False)
            return
        except Exception:  # noqa: BLE001 - not committed (the database, say): the broker keeps it
            log.exception("could not take a message from %s; it stays on the queue", self.queue)
            time.sleep(1)
            channel.basic_nack(method.delivery_tag, requeue=True)
            return
        channel.basic_ack(method.delivery_tag)


@dataclass(frozen=True)
class DeadLetter:
    """A message from the dead-letter queue: its body (which may not even be an event) and
    why it was dead-lettered, as the broker's x-death header says."""

    body: str
    queue: str
    reason: str

    @classmethod
    def of(cls, body: bytes, properties: BasicProperties) -> DeadLetter:
        deaths = (properties.headers or {}).get("x-death") or [{}]
        death = deaths[0] if isinstance(deaths, list) and deaths else {}
        return cls(body.decode("utf-8", "replace")[:4000], str(death.get("queue", "")),
                   str(death.get("reason", "rejected")))


def purge(url: str, namespace: str) -> None:
    """Delete a namespace's exchanges and queues (tests give each run its own)."""
    topology = Topology(namespace)
    connection = connect(url, f"{namespace} purge")
    try:
        channel = connection.channel()
        for queue in [*topology.bindings(), topology.dead_queue]:
            channel.queue_delete(queue)
        channel.exchange_delete(topology.exchange)
        channel.exchange_delete(topology.dead_exchange)
    finally:
        connection.close()
