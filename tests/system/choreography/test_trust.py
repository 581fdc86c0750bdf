"""Events you can trust: only an event's owner can publish it (the broker proves the account,
SERVICE_SECRET's signature proves a service), a choreography event never touches a saga the
orchestrator runs (nor the orchestrator a choreographed one), and whatever is refused goes to
the dead letters with its reason, counted, never handled."""

from __future__ import annotations

import uuid
from typing import Any

import pika
import pytest
import requests
from pika.exceptions import ChannelClosedByBroker
from prometheus_client.parser import text_string_to_metric_families
from tenacity import Retrying, stop_after_delay, wait_fixed

from common.signing import sign_event
from messaging.events import Envelope
from messaging.rabbitmq import SIGNATURE_HEADER, Topology
from scripts.stack import Stack
from tests.support.calls import choreographed, sign_up, start
from tests.support.checks import consistency
from tests.support.people import fresh_user
from tests.support.stacks import BROKER_URL


def refused(stack: Stack, reason: str, processes: str = "a b c orchestrator") -> float:
    """saga_events_refused_total{reason} of these processes, as they expose it now."""
    total = 0.0
    for process in processes.split():
        text = requests.get(f"{stack.urls[process]}/metrics", timeout=5).text
        total += sum(sample.value for family in text_string_to_metric_families(text)
                     for sample in family.samples
                     if sample.name == "saga_events_refused_total" and sample.labels.get("reason") == reason)
    return total


def publish(stack: Stack, url: str, envelope: Envelope, *, signed: bool = True,
            user_id: str | None = None, routing_key: str | None = None) -> None:
    """Publish an event on this stack's exchange over `url` (an account), as a relay would,
    or less: unsigned, or claiming another account."""
    body = envelope.dumps().encode()
    headers = {SIGNATURE_HEADER: sign_event(stack.secret, body)} if signed else {}
    connection = pika.BlockingConnection(pika.URLParameters(url))
    try:
        channel = connection.channel()
        channel.confirm_delivery()
        exchange = Topology(stack.namespace, stack.routes).exchange
        channel.basic_publish(exchange, routing_key or envelope.type, body,
                              pika.BasicProperties(delivery_mode=2, type=envelope.type, user_id=user_id,
                                                   headers=headers), mandatory=True)
    finally:
        if connection.is_open:
            connection.close()


def dead_letters(stack: Stack) -> list[dict[str, Any]]:
    answer = requests.get(f"{stack.urls['orchestrator']}/choreography/dead-letters", timeout=10).json()
    assert answer["unreachable"] == []
    return answer["dead_letters"]  # type: ignore[no-any-return]


def completed_orchestrated(stack: Stack) -> str:
    answer = start(stack, fresh_user())
    assert answer.json()["status"] == "COMPLETED", answer.text
    return str(answer.json()["saga_id"])


def removed(saga_id: str) -> Envelope:
    """B's AddressRemoved for a saga: what makes A undo its row."""
    return Envelope("AddressRemoved", saga_id, "b", {})


def assert_untouched(stack: Stack, saga_id: str) -> None:
    assert [stack.row_status(s, saga_id) for s in "abc"] == ["APPLIED"] * 3
    assert consistency(stack)["violations"] == []


# Over RabbitMQ: the broker proves the account ------------------------------------------------------

@pytest.fixture
def rabbit(choreo: Stack) -> Stack:
    if choreo.transport != "rabbitmq":
        pytest.skip("the broker's accounts: RabbitMQ only")
    return choreo


@pytest.mark.parametrize(("who", "reason"), [("guest", "wrong_publisher"), ("b, unsigned", "unsigned"),
                                             ("c, naming b as its source", "not_owner")])
def test_an_event_its_owner_did_not_publish_is_dead_lettered_and_changes_nothing(
        rabbit: Stack, who: str, reason: str) -> None:
    """The issue's attack: a hand-made AddressRemoved for a completed saga, on the broker. From
    another account (the administrator's), from B's own account without SERVICE_SECRET's
    signature, or from C's account naming B as its source (C may publish none of B's types,
    so it goes as one of C's own, PaymentFailed): refused by every consumer, never handled."""
    saga_id = completed_orchestrated(rabbit)
    before = refused(rabbit, reason)
    event = removed(saga_id)
    if who == "guest":
        publish(rabbit, BROKER_URL, event)  # an administrator may publish anything, but proves nothing
    elif who == "b, unsigned":
        publish(rabbit, rabbit.broker_urls["b"], event, signed=False, user_id=f"{rabbit.namespace}-b")
    else:
        publish(rabbit, rabbit.broker_urls["c"], Envelope("PaymentFailed", saga_id, "b", {}),
                user_id=f"{rabbit.namespace}-c")
    for attempt in Retrying(stop=stop_after_delay(15), wait=wait_fixed(0.1), reraise=True):
        with attempt:
            letters = [d for d in dead_letters(rabbit) if d["where"] == "broker" and d["saga_id"] == saga_id]
            assert letters and all(d["reason"] == reason for d in letters), letters
            assert refused(rabbit, reason) >= before + 2, "by its consumer and by the observer"
    assert_untouched(rabbit, saga_id)
    observed = requests.get(f"{rabbit.urls['orchestrator']}/choreography/sagas/{saga_id}", timeout=5)
    assert observed.status_code == 404, "nor did the observer take it for a choreographed saga"


def test_an_account_may_publish_only_its_own_event_types(rabbit: Stack) -> None:
    """B's account asking to publish C's PaymentRegistered is refused by the broker itself."""
    with pytest.raises(ChannelClosedByBroker, match="ACCESS_REFUSED"):
        publish(rabbit, rabbit.broker_urls["b"], Envelope("PaymentRegistered", uuid.uuid4().hex, "c", {}),
                user_id=f"{rabbit.namespace}-b")
    with pytest.raises(ChannelClosedByBroker, match="user_id"):  # nor claim to be another account
        publish(rabbit, rabbit.broker_urls["b"], removed(uuid.uuid4().hex), user_id=f"{rabbit.namespace}-c")


def test_a_forgery_cannot_be_redriven_and_a_refused_event_of_its_owner_can(rabbit: Stack) -> None:
    saga_id = completed_orchestrated(rabbit)
    publish(rabbit, BROKER_URL, removed(saga_id))
    for attempt in Retrying(stop=stop_after_delay(15), wait=wait_fixed(0.1), reraise=True):
        with attempt:
            letter = next(d for d in dead_letters(rabbit)
                          if d["where"] == "broker" and d["saga_id"] == saga_id)
    answer = requests.post(f"{rabbit.urls['orchestrator']}/choreography/dead-letters/redrive",
                           json={"where": "broker", "id": letter["id"]}, timeout=10,
                           headers={"Origin": rabbit.urls["orchestrator"]})
    assert (answer.status_code, answer.json()["error"]["code"]) == (409, "not_published_by_its_owner")
    assert_untouched(rabbit, saga_id)


# Both transports: each model touches only its own sagas -------------------------------------------

def test_a_choreography_event_never_touches_an_orchestrated_saga(choreo: Stack) -> None:
    """Even from B itself (its account, its signature): A refuses it, to its dead letters."""
    saga_id = completed_orchestrated(choreo)
    before = refused(choreo, "wrong_model", "a")
    event = removed(saga_id)
    if choreo.transport == "rabbitmq":
        publish(choreo, choreo.broker_urls["b"], event, user_id=f"{choreo.namespace}-b")
    else:
        answer = choreo.signed_post("a", "/events", event.dumps().encode())
        assert answer.status_code == 200, answer.text  # taken in; refused when handled
    for attempt in Retrying(stop=stop_after_delay(15), wait=wait_fixed(0.1), reraise=True):
        with attempt:
            letters = {d["where"]: d for d in dead_letters(choreo) if d.get("event_id") == event.event_id}
            assert letters["inbox"]["service"] == "a"
            assert "orchestrated" in letters["inbox"]["error"] and "wrong_model" in letters["inbox"]["error"]
            if choreo.transport == "rabbitmq":  # the observer's copy, refused as well
                assert letters["broker"]["reason"] == "wrong_model"
    assert refused(choreo, "wrong_model", "a") == before + 1
    assert_untouched(choreo, saga_id)


@pytest.mark.parametrize("action", ["invoke", "compensate", "cancel"])
def test_the_orchestrator_never_touches_a_choreographed_row(choreo: Stack, action: str) -> None:
    signup = fresh_user()
    saga_id = sign_up(choreo, signup)
    assert choreographed(choreo, saga_id)["status"] == "COMPLETED"
    body = {"saga_id": saga_id, **({"address": "elsewhere"} if action == "invoke" else {})}
    answer = choreo.signed_post("b", f"/{action}", body)
    assert (answer.status_code, answer.json()["error"]["code"]) == (409, "wrong_model"), answer.text
    assert choreo.row("b", saga_id) == {"saga_id": saga_id, "value": signup["address"], "status": "APPLIED"}
    assert requests.get(f"{choreo.urls['b']}/records/{saga_id}", timeout=5).json()["model"] == "choreography"


def test_an_event_whose_source_does_not_own_its_type_is_refused(choreo: Stack) -> None:
    """Over HTTP the call is signed with the secret all services share: the receiver checks that
    the event's source owns its type (the flow's table), and counts what it refuses."""
    if choreo.transport != "embedded":
        pytest.skip("the embedded transport's check (the broker's is above)")
    before = refused(choreo, "not_owner", "b")
    forged = Envelope("AccountCreated", uuid.uuid4().hex, "c", {})  # A's fact, claimed by C
    answer = choreo.signed_post("b", "/events", forged.dumps().encode())
    assert (answer.status_code, answer.json()["error"]["code"]) == (400, "bad_event")
    assert "a's fact" in answer.json()["error"]["message"]
    assert refused(choreo, "not_owner", "b") == before + 1
