"""At-least-once delivery made safe: a repeated event changes nothing, an unsigned one is refused,
and one that can never be handled ends in the dead letters the dashboard shows."""

from __future__ import annotations

import json
import uuid

import pika
import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import text
from tenacity import Retrying, stop_after_delay, wait_fixed

from common.db import utcnow
from common.ids import new_saga_id
from common.signing import sign_event
from messaging.events import Envelope
from messaging.rabbitmq import SIGNATURE_HEADER, Topology
from scripts.stack import Stack
from tests.support.calls import choreographed, event_types, sign_up, start
from tests.support.checks import assert_json_error
from tests.support.people import fresh_user
from tests.support.stacks import BROKER_URL

SUCCESS = ("SignupRequested", "AccountCreated", "AddressStored", "PaymentRegistered")


def handled_event(stack: Stack, service: str, saga_id: str, event_type: str) -> str:
    """The envelope of an event `service` handled for the saga, as its inbox keeps it."""
    query = text("SELECT envelope FROM inbox WHERE saga_id = :s AND event_type = :t")
    with stack.engines[service].connect() as connection:
        return str(connection.execute(query, {"s": saga_id, "t": event_type}).scalar_one())


def outbox_rows(stack: Stack, service: str, saga_id: str) -> int:
    with stack.engines[service].connect() as connection:
        return int(connection.execute(text("SELECT COUNT(*) FROM outbox WHERE saga_id = :s"),
                                      {"s": saga_id}).scalar_one())


def deliver_again(stack: Stack, service: str, envelope: str) -> None:
    """Hand an event to `service` once more, the way its transport brought it the first time
    (over the broker: as its publisher sent it, from its account, signed)."""
    if stack.transport == "embedded":
        answer = stack.signed_post(service, "/events", envelope.encode())
        assert (answer.status_code, answer.json()["status"]) == (200, "duplicate"), answer.text
        return
    body = json.loads(envelope)
    publisher = body["source"]
    connection = pika.BlockingConnection(pika.URLParameters(stack.broker_urls[publisher]))
    try:
        channel = connection.channel()
        channel.confirm_delivery()
        exchange = Topology(stack.namespace, stack.routes).exchange
        channel.basic_publish(exchange, body["type"], envelope.encode(),
                              pika.BasicProperties(delivery_mode=2, user_id=f"{stack.namespace}-{publisher}",
                                                   headers={SIGNATURE_HEADER: sign_event(stack.secret,
                                                                                         envelope.encode())}))
    finally:
        connection.close()


def received(stack: Stack, process: str, event_type: str, result: str) -> float:
    """saga_events_received_total{service, type, result} as the process exposes it now."""
    service = "observer" if process == "orchestrator" else process
    text_ = requests.get(f"{stack.urls[process]}/metrics", timeout=5).text
    return sum(sample.value for family in text_string_to_metric_families(text_) for sample in family.samples
               if sample.name == "saga_events_received_total" and sample.labels == {
                   "service": service, "type": event_type, "result": result})


def inbox_rows(stack: Stack, service: str, saga_id: str) -> list[tuple[str, str, int, str]]:
    """(type, status, attempts, when handled) of each event `service` took in for the saga; when:
    "on arrival" (in the statement that took it in), "later" (by the worker), or "never"."""
    query = text("SELECT event_type, status, attempts, received_at, handled_at FROM inbox "
                 "WHERE saga_id = :s ORDER BY event_type")
    with stack.engines[service].connect() as connection:
        rows = connection.execute(query, {"s": saga_id}).all()
    return [(kind, status, attempts, "never" if handled is None else "on arrival" if handled == received
             else "later") for kind, status, attempts, received, handled in rows]


def test_each_event_a_service_takes_is_in_its_inbox_once_handled_at_its_first_attempt(choreo: Stack) -> None:
    """Handled in the commit that took it in (written handled), or, with a fault to act out at B,
    by the worker: either way each event is in the inbox once, HANDLED, at attempt 1."""
    at_once, by_worker = sign_up(choreo), sign_up(choreo, b="delay:50")
    taken = {"a": ["PaymentRegistered", "SignupRequested"], "b": ["AccountCreated"], "c": ["AddressStored"]}
    for saga_id in (at_once, by_worker):
        assert choreographed(choreo, saga_id)["status"] == "COMPLETED"
        for attempt in Retrying(stop=stop_after_delay(15), wait=wait_fixed(0.1), reraise=True):
            with attempt:  # A handles the last event a moment after the observer has seen it
                for service, types in taken.items():
                    when = "later" if (saga_id, service) == (by_worker, "b") else "on arrival"
                    assert inbox_rows(choreo, service, saga_id) == [(t, "HANDLED", 1, when) for t in types]


def test_a_repeated_event_changes_nothing(choreo: Stack) -> None:
    saga_id = sign_up(choreo)
    saga = choreographed(choreo, saga_id, events=len(SUCCESS))
    assert saga["status"] == "COMPLETED"
    before = (outbox_rows(choreo, "b", saga_id), choreo.count("b", "table_b"))
    repeats = received(choreo, "b", "AccountCreated", "duplicate")
    deliver_again(choreo, "b", handled_event(choreo, "b", saga_id, "AccountCreated"))
    for attempt in Retrying(stop=stop_after_delay(15), wait=wait_fixed(0.1), reraise=True):
        with attempt:  # until B has taken the repeat in (and known it for one)
            assert received(choreo, "b", "AccountCreated", "duplicate") == repeats + 1
    assert (outbox_rows(choreo, "b", saga_id), choreo.count("b", "table_b")) == before, "handled once"
    assert event_types(choreographed(choreo, saga_id)) == event_types(saga), "the observer too saw it once"


def test_the_observer_counts_an_event_once(choreo: Stack) -> None:
    saga_id = sign_up(choreo)
    saga = choreographed(choreo, saga_id, events=len(SUCCESS))
    envelope = handled_event(choreo, "b", saga_id, "AccountCreated")
    if choreo.transport == "embedded":
        answer = choreo.signed_post("orchestrator", "/choreography/events", envelope.encode())
        assert answer.json()["status"] == "duplicate"
    else:
        deliver_again(choreo, "b", envelope)  # the observer's queue gets it too
    assert event_types(choreographed(choreo, saga_id)) == event_types(saga)


def test_events_must_be_signed(choreo: Stack) -> None:
    envelope = Envelope("AccountCreated", uuid.uuid4().hex, "a", {"input": {}, "deadline": "x"}).dumps()
    for url in (f"{choreo.urls['b']}/events", f"{choreo.urls['orchestrator']}/choreography/events"):
        answer = requests.post(url, data=envelope, headers={"Content-Type": "application/json"}, timeout=5)
        assert_json_error(answer, 401)


def test_an_event_a_service_does_not_take_is_refused(choreo: Stack) -> None:
    for body in (b"{}", b'{"event_id": "x"}',
                 Envelope("PaymentRegistered", uuid.uuid4().hex, "c", {}).dumps().encode(),  # not B's
                 Envelope("Nonsense", uuid.uuid4().hex, "c", {}).dumps().encode()):
        assert_json_error(choreo.signed_post("b", "/events", body), 400)


def dead_letters(stack: Stack) -> list[dict[str, object]]:
    answer = requests.get(f"{stack.urls['orchestrator']}/choreography/dead-letters", timeout=10).json()
    assert answer["unreachable"] == []
    return answer["dead_letters"]  # type: ignore[no-any-return]


def test_an_event_that_can_never_be_handled_is_dead_lettered_and_shown(choreo: Stack) -> None:
    poison = Envelope("PaymentRegistered", uuid.uuid4().hex, "c", {})  # B never takes this
    if choreo.transport == "embedded":  # A's relay will hand it to B, which refuses it for good
        now = utcnow()
        with choreo.engines["a"].begin() as connection:
            connection.execute(text(
                "INSERT INTO outbox (event_id, destination, event_type, saga_id, envelope, status, attempts, "
                "next_attempt_at, created_at) VALUES (:e, 'b', :t, :s, :v, 'PENDING', 0, :n, :n)"),
                {"e": poison.event_id, "t": poison.type, "s": poison.saga_id, "v": poison.dumps(), "n": now})
        sign_up(choreo)  # a commit at A wakes its relay
    else:  # straight onto B's queue, as a broken publisher might
        connection = pika.BlockingConnection(pika.URLParameters(BROKER_URL))
        try:
            queue = Topology(f"saga-test-{choreo.tag}", choreo.routes).queue("service_b")
            connection.channel().basic_publish("", queue,
                                               b"not an event at all", pika.BasicProperties(delivery_mode=2))
        finally:
            connection.close()
    for attempt in Retrying(stop=stop_after_delay(15), wait=wait_fixed(0.2), reraise=True):
        with attempt:
            letters = dead_letters(choreo)
            if choreo.transport == "embedded":
                assert any(letter.get("event_id") == poison.event_id and letter["where"] == "outbox"
                           for letter in letters), letters
            else:
                assert any(letter["where"] == "broker" and "not an event" in str(letter["body"])
                           for letter in letters), letters
    healthy = sign_up(choreo)
    assert choreographed(choreo, healthy)["status"] == "COMPLETED", "and the rest goes on"


def test_an_event_that_cannot_be_handled_on_arrival_holds_up_none_of_its_batch(choreo: Stack) -> None:
    """A delivery is handled in the commit that takes it in; when one of its events cannot be
    (here: one about an orchestrated saga, refused), that commit is undone and the batch is taken
    in alone: the worker then handles the rest, and refuses that one, as without the shortcut."""
    if choreo.transport != "embedded":
        pytest.skip("a batch posted to /events: the embedded transport's")
    orchestrated = start(choreo, fresh_user())
    assert orchestrated.json()["status"] == "COMPLETED", orchestrated.text
    refused = Envelope("AddressRemoved", orchestrated.json()["saga_id"], "b", {})
    unknown = Envelope("AddressRemoved", new_saga_id(), "b", {})  # A has no row: it leaves a tombstone
    batch = ("[" + ",".join(e.dumps() for e in (refused, unknown)) + "]").encode()
    answer = choreo.signed_post("a", "/events", batch)
    assert answer.status_code == 200, answer.text
    assert [r["status"] for r in answer.json()["results"]] == ["received", "received"]
    for attempt in Retrying(stop=stop_after_delay(15), wait=wait_fixed(0.1), reraise=True):
        with attempt:
            assert choreo.row_status("a", unknown.saga_id) == "CANCELLED"
            letters = [d for d in dead_letters(choreo) if d.get("event_id") == refused.event_id]
            assert [d["where"] for d in letters] == ["inbox"] and "wrong_model" in letters[0]["error"]
    assert [choreo.row_status(s, refused.saga_id) for s in "abc"] == ["APPLIED"] * 3
