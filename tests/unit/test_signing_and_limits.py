"""Pure pieces of the trust boundaries: signatures, instance ids, what a text field takes, log escaping."""

from __future__ import annotations

import logging
import os
import subprocess
import sys

import pytest

from common.errors import ApiError
from common.logs import JsonFormatter, TextFormatter, escape
from common.signing import BadSignature, sign, sign_event, verify, verify_event
from common.validation import text_field
from orchestrator.instances import instance_prefix, parse_instance, process_alive, this_instance

SECRET = "k" * 32


def test_a_signature_verifies_for_exactly_what_was_signed() -> None:
    header = sign(SECRET, "POST", "/invoke", b'{"saga_id":"s"}', now=1000)
    verify(SECRET, header, "POST", "/invoke", b'{"saga_id":"s"}', now=1030)
    for change in [("other-secret-" * 3, "POST", "/invoke", b'{"saga_id":"s"}'),
                   (SECRET, "PUT", "/invoke", b'{"saga_id":"s"}'),
                   (SECRET, "POST", "/compensate", b'{"saga_id":"s"}'),
                   (SECRET, "POST", "/invoke", b'{"saga_id":"t"}')]:
        with pytest.raises(BadSignature, match="does not match"):
            verify(*change[:1], header, *change[1:], now=1030)  # type: ignore[arg-type]


@pytest.mark.parametrize(("header", "now", "message"), [
    (None, 1000, "missing"), ("t=1000", 1000, "malformed"), ("v1=abc", 1000, "malformed"),
    (sign(SECRET, "POST", "/invoke", b"", now=1000), 1061, "older"),
    (sign(SECRET, "POST", "/invoke", b"", now=1000), 939, "older"),
])
def test_a_missing_malformed_or_stale_signature_is_refused(header: str | None, now: int,
                                                           message: str) -> None:
    with pytest.raises(BadSignature, match=message):
        verify(SECRET, header, "POST", "/invoke", b"", now=now)


def test_a_call_without_the_headers_a_participant_obeys_is_signed_as_before() -> None:
    plain = sign(SECRET, "POST", "/events", b"{}", now=1000, headers={"Content-Type": "application/json"})
    assert plain == sign(SECRET, "POST", "/events", b"{}", now=1000) and ",v1=" in plain


OBEYED = {"X-Saga-Attempt": "2", "X-Saga-Timeout": "5", "X-Saga-Fault": "delay:100"}


@pytest.mark.parametrize("tampering", [
    {"X-Saga-Fault": "timeout"},  # changed
    {"X-Saga-Attempt": "9"},  # changed
    {"X-Saga-Fault": None},  # dropped
    {"X-Saga-Attempt": None, "X-Saga-Timeout": None, "X-Saga-Fault": None},  # all dropped: v1 expected
])
def test_the_headers_a_participant_obeys_are_signed(tampering: dict[str, str | None]) -> None:
    header = sign(SECRET, "POST", "/invoke", b"{}", now=1000, headers=OBEYED)
    assert ",v2=" in header
    verify(SECRET, header, "POST", "/invoke", b"{}", now=1000, headers=OBEYED)
    sent = {k: v for k, v in {**OBEYED, **tampering}.items() if v is not None}
    with pytest.raises(BadSignature):
        verify(SECRET, header, "POST", "/invoke", b"{}", now=1000, headers=sent)


def test_a_header_added_to_a_plain_signed_call_breaks_its_signature() -> None:
    header = sign(SECRET, "POST", "/invoke", b"{}", now=1000)
    with pytest.raises(BadSignature, match="v2"):
        verify(SECRET, header, "POST", "/invoke", b"{}", now=1000, headers={"X-Saga-Fault": "timeout"})


def test_an_event_signature_covers_its_body_and_nothing_else_forges_it() -> None:
    body = b'{"event_id":"e","type":"AccountCreated"}'
    verify_event(SECRET, sign_event(SECRET, body), body)
    for signature, sent in [(sign_event(SECRET, body), body.replace(b"Account", b"Payment")),
                            (sign_event("x" * 32, body), body), (None, body), ("v1=zz", body),
                            (sign(SECRET, "POST", "/events", body), body)]:
        with pytest.raises(BadSignature):
            verify_event(SECRET, signature, sent)


def test_instance_ids_round_trip_and_group_by_name_and_host() -> None:
    me = this_instance("orch-1")
    assert parse_instance(str(me)) == me
    assert str(me).startswith(instance_prefix(me)) and instance_prefix(me) == f"orch-1@{me.host}:"
    assert parse_instance("orchestrator-1") is None, "an owner from before instance ids"
    assert process_alive(me) is False, "our own pid under another nonce is a dead predecessor"


def test_a_killed_process_is_dead_even_before_it_is_reaped() -> None:
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    instance = this_instance("x")
    alive = type(instance)(instance.name, instance.host, child.pid, "n")
    assert process_alive(alive)
    child.kill()
    os.waitid(os.P_PID, child.pid, os.WEXITED | os.WNOWAIT)  # exited, still a zombie
    assert not process_alive(alive)
    child.wait()
    assert not process_alive(alive)


@pytest.mark.parametrize("value", ["ada\nadmin", "tab\there", "\ud800x", "a\x00b", "line\u2028sep", "\x7f"])
def test_text_fields_refuse_control_characters_and_lone_surrogates(value: str) -> None:
    with pytest.raises(ApiError) as refused:
        text_field({"username": value}, "username")
    assert refused.value.status == 400


def test_text_fields_take_any_printable_unicode() -> None:
    assert text_field({"username": "Zoë Ångström ✓ 山田"}, "username") == "Zoë Ångström ✓ 山田"


def test_log_lines_cannot_be_forged() -> None:
    record = logging.LogRecord("x", logging.INFO, "f", 1, "saga %s: started %s",
                               ("s1", "ada\n2026 INFO forged"), None)
    text = TextFormatter("%(message)s").format(record)
    assert "\n" not in text and "ada\\n2026 INFO forged" in text
    assert "\n" not in JsonFormatter().format(record)
    assert escape("\ud800") == "\\ud800"
