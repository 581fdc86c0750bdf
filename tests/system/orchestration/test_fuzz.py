"""Property-based fuzzing of the four live processes against their OpenAPI descriptions (schemathesis).

For every operation of the orchestrator and of services A, B and C: the description's examples, its
boundary cases (valid and invalid) and a few random requests, each answer's status code, content type,
headers and body checked against the description, invalid requests refused, and no 5xx that the
description does not name. Faults are off, so no answer may be a 500 at all: a 500 here is a bug.
The signed POSTs are fuzzed signed (to reach past the signature check) and unsigned (refused, 401).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit
from uuid import uuid4

import pytest
import requests
import schemathesis
import yaml
from hypothesis import HealthCheck, settings
from schemathesis import Case, CheckContext, Response
from schemathesis.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from schemathesis.core.parameters import ParameterLocation
from schemathesis.schemas import BaseSchema

from common.signing import SIGNATURE_HEADER, sign
from scripts.stack import Stack
from tests.support.people import fresh_user

ROOT = Path(__file__).resolve().parents[3]
DOCUMENTS = {"orchestrator": ROOT / "orchestrator" / "openapi.yaml",
             "participant": ROOT / "participant" / "openapi.yaml"}


def document(kind: str) -> dict[str, Any]:
    """A description as the YAML file holds it."""
    loaded: dict[str, Any] = yaml.load(DOCUMENTS[kind].read_text(encoding="utf-8"), Loader=yaml.CSafeLoader)
    return loaded


def load(kind: str, phases: list[str], max_examples: int, signed: bool = True) -> BaseSchema:
    """A description as schemathesis reads it, bounded: no stateful phase, few random examples,
    the same cases every run, no probing of methods the description does not list. Signed, the
    signature is made by `Signed` below; unsigned, it is drawn (and so never valid)."""
    schema = schemathesis.openapi.from_dict(document(kind))
    schema.config.phases.update(phases=phases)
    schema.config.phases.coverage.unexpected_methods = set()
    # Unknown headers and query arguments are ignored by design: drawing them would only test that.
    schema.config.generation.update(max_examples=max_examples, deterministic=True,
                                    allow_extra_parameters=False, with_security_parameters=not signed)
    return schema


def is_signed(operation: Any) -> bool:
    """Does the operation take only signed calls (it names the security scheme)?"""
    return bool(operation.definition.raw.get("security"))


ORCHESTRATOR = load("orchestrator", ["examples", "coverage", "fuzzing"], max_examples=4)
PARTICIPANT = load("participant", ["examples", "coverage", "fuzzing"], max_examples=4)
# Unsigned, every call is refused before its body is looked at: a few random ones suffice.
ORCHESTRATOR_UNSIGNED = load("orchestrator", ["fuzzing"], max_examples=5, signed=False).include(
    lambda ctx: is_signed(ctx.operation))
PARTICIPANT_UNSIGNED = load("participant", ["fuzzing"], max_examples=5, signed=False).include(
    lambda ctx: is_signed(ctx.operation))


def undocumented_server_error(ctx: CheckContext, response: Response, case: Case) -> None:
    """No 500 (faults are off: a 500 is a bug), and no other 5xx the operation does not describe."""
    status = response.status_code
    assert status != 500, f"500 with faults off: {response.text[:500]}"
    assert status < 500 or str(status) in case.operation.responses.status_codes, \
        f"undocumented {status}: {response.text[:500]}"


def no_stack_trace(ctx: CheckContext, response: Response, case: Case) -> None:
    """Never a stack trace in an answer."""
    assert "Traceback (most recent call last)" not in response.text, response.text[:500]


def unsigned_refused(ctx: CheckContext, response: Response, case: Case) -> None:
    """Without a valid signature nothing gets past the check: 401 (or an answer given before it is
    made: 403 to a cross-site browser, 413 to a body too large to read)."""
    assert response.status_code in (401, 403, 413), f"unsigned call answered {response.status_code}"


CHECKS = [undocumented_server_error, no_stack_trace, status_code_conformance, content_type_conformance,
          response_headers_conformance, response_schema_conformance, negative_data_rejection]
FUZZ_SETTINGS = settings(deadline=None, suppress_health_check=list(HealthCheck))


class Signed(requests.auth.AuthBase):
    """Signs each request as a service would, over the exact bytes sent (requests runs this hook
    last, once the body is serialised)."""

    def __init__(self, secret: str) -> None:
        self.secret = secret

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        body = request.body or b""
        raw = body.encode() if isinstance(body, str) else body
        assert isinstance(raw, bytes), "schemathesis sends bodies as bytes or text"
        request.headers[SIGNATURE_HEADER] = sign(self.secret, request.method or "POST",
                                                 urlsplit(request.url or "").path, raw,
                                                 headers=request.headers)
        return request


@pytest.fixture(scope="module")
def session() -> Iterator[requests.Session]:
    """One kept-alive connection per process for the whole run (a new one per request costs more)."""
    with requests.Session() as kept:
        kept.trust_env = False
        yield kept


def username_of_its_own(case: Case) -> None:
    """A valid drawn body with a username (a sign-up, or A's /invoke) gets one no other saga of the
    fuzz has: A refuses a username a live account of another saga holds, and drawn usernames repeat
    (hypothesis draws "0" again and again). Prefixed with a tag of its saga id (or its Idempotency-Key),
    so that a repeat of one saga still sends the same; cut to the 255 characters a field may have."""
    body = case.body
    if not isinstance(body, dict) or not isinstance(body.get("username"), str):
        return
    if case.meta is not None and case.meta.is_negative_at(ParameterLocation.BODY):
        return  # drawn invalid: left as drawn, to be refused
    key = body.get("saga_id") or (case.headers or {}).get("Idempotency-Key") or uuid4().hex
    tag = hashlib.sha256(str(key).encode()).hexdigest()[:12]
    if not body["username"].startswith(f"{tag}-"):  # (one case may be sent to A, B and C)
        case.body = {**body, "username": f"{tag}-{body['username']}"[:255]}


def call(case: Case, base_url: str, session: requests.Session, checks: list[Any],
         auth: requests.auth.AuthBase | None = None) -> None:
    """Send the case to the live process and check its answer. (A drawn `?wait=30` costs
    nothing: no saga the fuzz asks about is known, and an unknown one answers 404 at once.)"""
    username_of_its_own(case)
    case.call_and_validate(base_url=base_url, session=session, checks=checks, auth=auth, timeout=30)


@pytest.mark.parametrize("process", ["orchestrator", "a", "b", "c"])
def test_each_process_serves_its_description(faults_off: Stack, process: str) -> None:
    answer = requests.get(f"{faults_off.urls[process]}/openapi.json", timeout=10)
    assert answer.status_code == 200, answer.text
    assert answer.json() == document("orchestrator" if process == "orchestrator" else "participant")


@ORCHESTRATOR.parametrize()
@FUZZ_SETTINGS
def test_orchestrator(case: Case, faults_off: Stack, session: requests.Session) -> None:
    auth = Signed(faults_off.secret) if is_signed(case.operation) else None
    call(case, faults_off.urls["orchestrator"], session, CHECKS, auth)


@pytest.mark.parametrize("service", ["a", "b", "c"])
@PARTICIPANT.parametrize()
@FUZZ_SETTINGS
def test_participant(case: Case, faults_off: Stack, session: requests.Session, service: str) -> None:
    auth = Signed(faults_off.secret) if is_signed(case.operation) else None
    call(case, faults_off.urls[service], session, CHECKS, auth)


@ORCHESTRATOR_UNSIGNED.parametrize()
@FUZZ_SETTINGS
def test_orchestrator_unsigned(case: Case, faults_off: Stack, session: requests.Session) -> None:
    call(case, faults_off.urls["orchestrator"], session, [*CHECKS, unsigned_refused])


@pytest.mark.parametrize("service", ["a", "b", "c"])
@PARTICIPANT_UNSIGNED.parametrize()
@FUZZ_SETTINGS
def test_participant_unsigned(case: Case, faults_off: Stack, session: requests.Session, service: str) -> None:
    call(case, faults_off.urls[service], session, [*CHECKS, unsigned_refused])


# Bugs found while describing the API, by reading the code (random requests do not reach them), each
# with its exact request; fixed, and kept so that they stay fixed.


def event(**fields: Any) -> dict[str, Any]:
    """A well-formed envelope of a saga of its own, changed by `fields`."""
    return {"event_id": uuid4().hex, "type": "AccountCreated", "saga_id": f"fuzz-{uuid4().hex}",
            "source": "a", "payload": {}, **fields}


def test_a_signed_sign_up_event_with_a_malformed_deadline_is_not_a_500(faults_off: Stack) -> None:
    answer = faults_off.signed_post("orchestrator", "/choreography/events",
                                event(type="SignupRequested", payload={"deadline": "soon"}))
    assert answer.status_code == 400, answer.text


def test_a_signed_event_with_a_lone_surrogate_is_not_a_500(faults_off: Stack) -> None:
    for bad in (event(source="\ud800"), event(occurred_at="\udfff"), event(payload={"input": "x"}),
                event(type="SignupRequested", source="b")):  # another's fact, in a's name
        answer = faults_off.signed_post("orchestrator", "/choreography/events", bad)
        assert answer.status_code == 400, answer.text


def test_a_405_names_the_methods_the_path_takes(faults_off: Stack) -> None:
    answer = requests.put(f"{faults_off.urls['orchestrator']}/start", timeout=10)
    assert answer.status_code == 405, answer.text
    assert answer.headers.get("Allow") == "OPTIONS, POST"


def test_saga_ids_that_differ_in_case_are_two_sagas(faults_off: Stack) -> None:
    lower, username = f"case-{uuid4().hex}", fresh_user()["username"]
    faults_off.signed_post("a", "/invoke", {"saga_id": lower, "username": username})
    faults_off.signed_post("a", "/compensate", {"saga_id": lower.upper()})
    assert faults_off.row("a", lower) == {"saga_id": lower, "value": username, "status": "APPLIED"}, \
        "compensating another saga undid this one"


def test_idempotency_keys_that_differ_in_case_are_two_keys(faults_off: Stack) -> None:
    key = f"key-{uuid4().hex}"
    first = requests.post(f"{faults_off.urls['orchestrator']}/start", json=fresh_user(), timeout=30,
                          headers={"Idempotency-Key": key})
    second = requests.post(f"{faults_off.urls['orchestrator']}/start", json=fresh_user(), timeout=30,
                           headers={"Idempotency-Key": key.upper()})
    assert (first.status_code, second.status_code) == (200, 200), second.text
    assert first.json()["saga_id"] != second.json()["saga_id"], "two keys started one saga"
