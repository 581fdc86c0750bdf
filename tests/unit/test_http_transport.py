"""The embedded transport's batches fit the receiver's body limit: a backlog is sent in as many
POSTs as it takes, never refused whole for its size (a refusal dead-letters every event in it)."""

from __future__ import annotations

import json
from typing import Any

from common.http import CallTimedOut, Reply
from messaging.transport import HttpTransport


class Receiver:
    """Stands in for `Http`: answers a POST as a receiver with a body limit of `most` bytes does
    (413 over it, else each event received), and keeps the bodies it was sent."""

    def __init__(self, most: int) -> None:
        self.most = most
        self.bodies: list[bytes] = []

    def post(self, url: str, body: bytes, timeout: float, **_: Any) -> Reply:
        self.bodies.append(body)
        if len(body) > self.most:
            return Reply(413, b'{"error": "too_large"}', {})
        results = [{"event_id": event["event_id"], "status": "received"} for event in json.loads(body)]
        return Reply(200, json.dumps({"results": results}).encode(), {})


def envelopes(count: int, size: int) -> list[str]:
    """`count` JSON events of `size` bytes each."""
    made = []
    for n in range(count):
        head = f'{{"event_id":"e{n:04d}","pad":"'
        made.append(head + "x" * (size - len(head) - 2) + '"}')
    return made


def transport(receiver: Receiver, max_body: int) -> HttpTransport:
    return HttpTransport({"b": "http://b"}, receiver, max_body=max_body)  # type: ignore[arg-type]


def test_a_batch_larger_than_the_limit_goes_in_parts_that_fit_and_every_event_is_delivered() -> None:
    receiver = Receiver(most=4096)
    sent = envelopes(20, 700)  # 14 KB in all

    deliveries = transport(receiver, max_body=4096).deliver("b", sent)

    assert all(delivery.ok for delivery in deliveries) and len(deliveries) == 20
    assert len(receiver.bodies) == 4 and all(len(body) <= 4096 for body in receiver.bodies)
    assert [event["event_id"] for body in receiver.bodies for event in json.loads(body)] == \
        [json.loads(e)["event_id"] for e in sent]  # each once, in order


def test_a_part_exactly_at_the_limit_is_one_post() -> None:
    receiver = Receiver(most=2 + 3 * 100 + 2)  # "[", three events, two commas, "]"
    deliveries = transport(receiver, max_body=receiver.most).deliver("b", envelopes(3, 100))
    assert all(d.ok for d in deliveries) and len(receiver.bodies) == 1


def test_a_receiver_that_takes_less_than_the_sender_thinks_gets_the_batch_halved_until_it_fits() -> None:
    receiver = Receiver(most=1500)  # configured lower than the sender's MAX_BODY_BYTES

    deliveries = transport(receiver, max_body=64 * 1024).deliver("b", envelopes(8, 700))

    assert all(delivery.ok for delivery in deliveries) and len(deliveries) == 8
    accepted = [body for body in receiver.bodies if len(body) <= 1500]
    assert sum(len(json.loads(body)) for body in accepted) == 8


def test_one_event_larger_than_the_limit_is_refused_for_good_and_alone() -> None:
    receiver = Receiver(most=1000)
    sent = [*envelopes(2, 300), *envelopes(1, 2000), *envelopes(2, 300)]

    deliveries = transport(receiver, max_body=1000).deliver("b", sent)

    assert [d.ok for d in deliveries] == [True, True, False, True, True]
    assert deliveries[2].permanent and "413" in (deliveries[2].error or "")


def test_a_receiver_that_does_not_answer_is_not_sent_the_rest_of_the_batch() -> None:
    """Each part would wait the whole timeout: the first that gets no answer ends the delivery,
    every event of the batch to be tried again."""
    class Frozen(Receiver):
        def post(self, url: str, body: bytes, timeout: float, **_: Any) -> Reply:
            self.bodies.append(body)
            raise CallTimedOut("no answer within 5 s")

    receiver = Frozen(most=4096)
    deliveries = transport(receiver, max_body=4096).deliver("b", envelopes(20, 700))

    assert len(receiver.bodies) == 1
    assert len(deliveries) == 20 and not any(d.ok or d.permanent for d in deliveries)
