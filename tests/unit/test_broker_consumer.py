"""What the broker consumer acknowledges when: a message that proves no publisher is
dead-lettered and acknowledged at once, so that when the good ones beside it cannot be taken in
(the database is down) and go back on the queue, it does not come back to be dead-lettered again;
and a consumer that fails closes its connection before it makes another."""

from __future__ import annotations

from typing import Any

import pytest
from pika.exceptions import AMQPConnectionError
from pika.spec import Basic, BasicProperties

import messaging.rabbitmq
from choreography.flow import Flows
from common.signing import sign_event
from messaging.events import Envelope
from messaging.rabbitmq import SIGNATURE_HEADER, BrokerConsumer, keep_consuming

SECRET = "s" * 32


class Channel:
    """Stands in for pika's channel: what was published (the dead letters), acked and nacked."""

    def __init__(self) -> None:
        self.dead_letters: list[bytes] = []
        self.acks: list[tuple[int, bool]] = []
        self.nacks: list[tuple[int, bool, bool]] = []

    def basic_publish(self, exchange: str, routing_key: str, body: bytes, properties: Any) -> None:
        self.dead_letters.append(body)

    def basic_ack(self, delivery_tag: int, multiple: bool = False) -> None:
        self.acks.append((delivery_tag, multiple))

    def basic_nack(self, delivery_tag: int, multiple: bool = False, requeue: bool = True) -> None:
        self.nacks.append((delivery_tag, multiple, requeue))


def message(tag: int, signed: bool) -> tuple[Basic.Deliver, BasicProperties, bytes]:
    body = Envelope("AccountCreated", f"saga-{tag}", "a", {}).dumps().encode()
    headers = {SIGNATURE_HEADER: sign_event(SECRET, body)} if signed else {}
    return (Basic.Deliver(delivery_tag=tag, routing_key="AccountCreated"),
            BasicProperties(type="AccountCreated", user_id="guest", headers=headers), body)


def consumer(receive: Any) -> BrokerConsumer:
    return BrokerConsumer("amqp://guest:guest@127.0.0.1:1/%2F", "t", "service_b", receive, SECRET, "b",
                          Flows.load({}).routes)


def test_a_refused_message_is_acked_at_once_and_not_dead_lettered_again(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(messaging.rabbitmq.time, "sleep", lambda _seconds: None)
    database_up = False
    received: list[Envelope] = []

    def receive(envelopes: list[Envelope]) -> list[bool]:
        if not database_up:
            raise RuntimeError("the database is down")
        received.extend(envelopes)
        return [True] * len(envelopes)

    channel = Channel()
    taking = consumer(receive)
    taking._take(channel, [message(1, signed=True), message(2, signed=False), message(3, signed=True)])  # type: ignore[arg-type]
    assert len(channel.dead_letters) == 1
    assert channel.acks == [(2, False)], "the refused one, alone"
    assert channel.nacks == [(3, True, True)], "the good ones go back on the queue"

    database_up = True  # the broker brings back the two good ones, and only them
    taking._take(channel, [message(4, signed=True), message(5, signed=True)])  # type: ignore[arg-type]
    assert len(channel.dead_letters) == 1 and len(received) == 2
    assert channel.acks[-1] == (5, True)


def test_a_batch_of_refused_messages_alone_is_acked_one_by_one(monkeypatch: pytest.MonkeyPatch) -> None:
    channel = Channel()
    consumer(lambda envelopes: [True] * len(envelopes))._take(  # type: ignore[arg-type]
        channel, [message(1, signed=False), message(2, signed=False)])  # type: ignore[arg-type]
    assert len(channel.dead_letters) == 2
    assert channel.acks == [(1, False), (2, False)] and channel.nacks == []


class Connection:
    """Stands in for pika's connection: open until closed."""

    def __init__(self) -> None:
        self.is_open = True

    def close(self) -> None:
        self.is_open = False


class Stop(BaseException):
    """Ends the test's consumer (keep_consuming stops for nothing else)."""


def test_a_consumer_that_fails_closes_its_connection_and_makes_another(
        monkeypatch: pytest.MonkeyPatch) -> None:
    made: list[Connection] = []
    pauses: list[float] = []
    monkeypatch.setattr(messaging.rabbitmq, "connect",
                        lambda _url, _name: made.append(Connection()) or made[-1])
    monkeypatch.setattr(messaging.rabbitmq.time, "sleep", pauses.append)
    failures = iter([RuntimeError("a bug of ours"), AMQPConnectionError("the broker went away"), Stop()])

    def consume(connection: Any) -> None:
        raise next(failures)

    with pytest.raises(Stop):
        keep_consuming("amqp://guest:guest@127.0.0.1:1/%2F", "test consumer", consume)
    assert len(made) == 3
    assert [c.is_open for c in made[:2]] == [False, False], "each closed (its unacked messages go back)"
    assert pauses == [0.2, 0.4], "one that fails at once is retried less and less often"


def test_a_connection_that_served_a_while_starts_the_pause_over(monkeypatch: pytest.MonkeyPatch) -> None:
    pauses: list[float] = []
    now = [0.0]
    served = iter([0.1, 0.1, 60.0])  # how long each connection serves: twice a moment, then a minute
    monkeypatch.setattr(messaging.rabbitmq, "connect", lambda _url, _name: Connection())
    monkeypatch.setattr(messaging.rabbitmq.time, "monotonic", lambda: now[0])
    monkeypatch.setattr(messaging.rabbitmq.time, "sleep", pauses.append)

    def consume(connection: Any) -> None:
        try:
            now[0] += next(served)
        except StopIteration:
            raise Stop() from None
        raise AMQPConnectionError("gone")

    with pytest.raises(Stop):
        keep_consuming("amqp://guest:guest@127.0.0.1:1/%2F", "test consumer", consume)
    assert pauses == [0.2, 0.4, 0.2]
