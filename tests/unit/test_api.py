"""The orchestrator's HTTP API in-process: Flask's test client, scripted participants behind the
engine, and a fake gateway for what the API reads from participants outside a saga."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import create_engine

from common.consistency import Unreachable
from common.web import keep
from orchestrator.app import create_app
from orchestrator.client import Attempt
from orchestrator.gateway import Probe
from orchestrator.services import Services
from tests.support.people import fresh_user
from tests.support.scripted import ScriptedParticipants


class FakeGateway:
    """Rows and health as a test sets them; `down` makes every read fail."""

    def __init__(self) -> None:
        self.rows: dict[tuple[str, str], dict[str, Any]] = {}
        self.down = False
        self.services = ("a", "b", "c")
        self.probes: list[tuple[str, str | None, float]] = []

    def record(self, service: str, saga_id: str) -> dict[str, Any] | None:
        if self.down:
            raise Unreachable(f"{service}: down")
        return self.rows.get((service, saga_id))

    def records_between(self, service: str, after: str, until: str | None) -> Iterator[dict[str, Any]]:
        if self.down:
            raise Unreachable(f"{service}: down")
        return iter([row for (s, saga_id), row in sorted(self.rows.items())
                     if s == service and after < saga_id and (until is None or saga_id <= until)])

    def health(self, service: str) -> dict[str, Any]:
        return {"url": f"http://{service}", "status": "down" if self.down else "ok"}

    def probe(self, service: str, fault: str | None, timeout: float) -> Probe:
        self.probes.append((service, fault, timeout))
        return Probe(service, "probe-1", Attempt(1, 409, "rejected", 7, "closed", {"status": "CANCELLED"}),
                     undone=service == "b")


def services_of(app: Flask) -> Services:
    services = app.extensions["Services"]
    assert isinstance(services, Services)
    return services


@pytest.fixture
def app(tmp_path: Path) -> Iterator[Flask]:
    app = create_app({"DATABASE_URL": f"sqlite:///{tmp_path / 'log.db'}", "RECOVERY_ENABLED": False,
                      "RETRY_BACKOFF": 0.0, "RETRY_JITTER": 0.0, "SERVICE_SECRET": "s" * 32,
                      "FAULTS_ENABLED": True})
    keep(app, replace(services_of(app), gateway=FakeGateway()))  # type: ignore[arg-type]
    yield app
    services_of(app).store.engine.dispose()


def participants(app: Flask, script: dict[tuple[str, str], list[str]]) -> ScriptedParticipants:
    scripted = ScriptedParticipants(script)
    services_of(app).engine.client = scripted  # type: ignore[assignment]
    services_of(app).engine.urls = {name: f"http://x/{name}" for name in "abc"}
    return scripted


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


def test_start_runs_the_default_definition_and_sends_each_service_its_own_field(
        app: Flask, client: FlaskClient) -> None:
    scripted, user = participants(app, {}), fresh_user()
    answer = client.post("/start", json=user)
    assert answer.status_code == 200, answer.json
    body = answer.json
    assert body is not None and body["status"] == "COMPLETED"
    assert [s["step"] for s in body["steps"]] == ["a", "b", "c"]
    assert scripted.payloads["c"] == {"saga_id": body["saga_id"], "payment": user["payment"]}
    saga = client.get(f"/sagas/{body['saga_id']}").json
    assert saga is not None and saga["definition"] == {"name": "signup", "version": 1}
    assert [e["step"] for e in saga["events"]] == ["a", "b", "c"]


def test_a_failed_step_answers_500_and_a_timeout_504(app: Flask, client: FlaskClient) -> None:
    participants(app, {("b", "invoke"): ["error"]})
    failed = client.post("/start", json=fresh_user())
    body = failed.json
    assert (failed.status_code, body["status"], body["failed_step"]) == (500, "COMPENSATED", "b")
    participants(app, {("c", "invoke"): ["timeout"]})
    timed_out = client.post("/start", json=fresh_user())
    assert (timed_out.status_code, timed_out.json["reason"]) == (504, "timeout")


@pytest.mark.parametrize(("length", "status"), [(128, 200), (129, 400), (0, 400)])
def test_the_idempotency_key_is_1_to_128_characters(app: Flask, client: FlaskClient,
                                                   length: int, status: int) -> None:
    participants(app, {})
    answer = client.post("/start", json=fresh_user(), headers={"Idempotency-Key": "k" * length})
    assert answer.status_code == status, answer.json
    if status == 400:
        assert answer.json["error"]["code"] == "invalid_idempotency_key"
        assert client.get("/sagas").json["sagas"] == [], "nothing was started"


def rows_applied(app: Flask, saga_id: str, user: dict[str, str]) -> FakeGateway:
    """The fake gateway, holding an APPLIED row with the user's value at A, B and C."""
    gateway: FakeGateway = services_of(app).gateway  # type: ignore[assignment]
    for service, field in (("a", "username"), ("b", "address"), ("c", "payment")):
        gateway.rows[(service, saga_id)] = {"saga_id": saga_id, "status": "APPLIED", field: user[field]}
    return gateway


def test_the_rows_of_a_saga_and_their_verdict(app: Flask, client: FlaskClient) -> None:
    participants(app, {})
    user = fresh_user()
    saga_id = client.post("/start", json=user).json["saga_id"]
    gateway = rows_applied(app, saga_id, user)
    assert client.get(f"/sagas/{saga_id}/records").json["verdict"] == "consistent"
    gateway.rows[("b", saga_id)]["status"] = "COMPENSATED"
    records = client.get(f"/sagas/{saga_id}/records").json
    assert records["verdict"] == "inconsistent" and records["problems"] == [
        "b: COMPLETED saga, but the row is COMPENSATED"]
    gateway.down = True
    assert client.get(f"/sagas/{saga_id}/records").json["verdict"] == "unknown"


def test_consistency_compares_values_through_the_gateway(app: Flask, client: FlaskClient) -> None:
    participants(app, {})
    user = fresh_user()
    saga_id = client.post("/start", json=user).json["saga_id"]
    gateway = rows_applied(app, saga_id, user)
    assert client.get("/consistency").json["ok"] is True
    gateway.rows[("b", saga_id)]["address"] = "somewhere else"
    report = client.get("/consistency").json
    assert [(v["saga_id"], v["kind"]) for v in report["violations"]] == [(saga_id, "value_mismatch")]


def test_definition_lists_every_step_with_its_kind_and_policy(client: FlaskClient) -> None:
    body = client.get("/definition").json
    assert (body["name"], body["version"], body["known"]) == ("signup", 1, ["signup@1", "signup@2"])
    assert body["input_fields"] == ["username", "address", "payment"]
    assert [(s["name"], s["kind"], s["receives"]) for s in body["steps"]] == [
        ("a", "compensatable", ["username"]), ("b", "compensatable", ["address"]),
        ("c", "compensatable", ["payment"])]
    assert {(s["timeout"], s["retries"], s["compensation_retries"]) for s in body["steps"]} == {(5.0, 2, 5)}
    assert client.get("/definition?key=signup@2").json["version"] == 2
    for key in ("signup@9", "signup@x", "signup@²", "signup@" + "9" * 5000):  # 5,000 digits: not for int()
        assert client.get("/definition", query_string={"key": key}).status_code == 404


def test_test_status_probes_a_service_of_the_definition(app: Flask, client: FlaskClient) -> None:
    """The probe goes to the service asked (with its fault, in canonical form, and the call
    timeout), and its answer is passed on as the service gave it."""
    gateway: FakeGateway = services_of(app).gateway  # type: ignore[assignment]
    answer = client.post("/test_status", json={"service": "b", "fail": " transient:2"})
    assert answer.status_code == 200
    assert answer.json == {"service": "b", "saga_id": "probe-1", "status_code": 409, "outcome": "rejected",
                           "response": {"status": "CANCELLED"}, "undone": True}
    first = client.post("/test_status").json
    assert (first["service"], first["undone"]) == ("a", False), "the first step's, unless told"
    assert gateway.probes == [("b", "transient:2", 5.0), ("a", None, 5.0)]
    assert client.post("/test_status", json={"service": "z"}).status_code == 400
    assert client.post("/test_status", json={"fail": "explode"}).status_code == 400
    assert len(gateway.probes) == 2, "nothing probed for a bad request"


def test_health_is_503_without_the_databases_words(app: Flask, client: FlaskClient,
                                                   tmp_path: Path) -> None:
    assert client.get("/health").status_code == 200
    broken = create_engine(f"sqlite:///{tmp_path / 'no-such-dir' / 'log.db'}")
    keep(app, replace(services_of(app), store=replace_engine(services_of(app).store, broken)))
    answer = client.get("/health")
    assert answer.status_code == 503
    assert answer.json == {"orchestrator_id": app.config["ORCHESTRATOR_ID"], "status": "unhealthy",
                           "database": "unavailable"}


def replace_engine(store: Any, engine: Any) -> Any:
    from orchestrator.store import SagaStore

    return SagaStore(engine, store.lease.total_seconds())


@pytest.mark.parametrize("query", ["limit=²", "limit=0", "limit=501", "status=HAPPY", "colour=red"])
def test_bad_list_arguments_are_400(client: FlaskClient, query: str) -> None:
    answer = client.get(f"/sagas?{query}")
    assert answer.status_code == 400 and answer.json["error"]["code"]
