"""Trust boundaries, on the real processes: only signed calls change a participant's row,
faults can be switched off and cannot starve a service, other sites cannot start sagas,
bad input is a clean 4xx, and a lost database is a 503 the processes recover from."""

from __future__ import annotations

import json
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests
from sqlalchemy import make_url
from tenacity import Retrying, stop_after_delay, wait_fixed

from common.signing import SIGNATURE_HEADER, sign
from scripts.stack import Stack
from tests.support.calls import compensate, invoke, start, wait_for_saga
from tests.support.checks import all_counts, assert_json_error, consistency
from tests.support.people import fresh_user
from tests.support.stacks import TEST_DATABASE_URL
from tests.support.stand_ins import TcpProxy

# Signed calls ---------------------------------------------------------------------------------

@pytest.mark.parametrize("path", ["/invoke", "/compensate", "/cancel"])
def test_an_unsigned_call_changes_nothing(stack: Stack, path: str) -> None:
    saga_id = start(stack, fresh_user()).json()["saga_id"]  # COMPLETED: B holds an APPLIED row
    body = {"saga_id": saga_id} if path != "/invoke" else {"saga_id": uuid.uuid4().hex, "address": "x"}
    answer = requests.post(f"{stack.urls['b']}{path}", json=body, timeout=5)
    assert_json_error(answer, 401)
    assert answer.json()["error"]["code"] == "unauthorized"
    assert stack.row_status("b", saga_id) == "APPLIED", "the compensate of an intruder did nothing"
    assert f"refused an unsigned call: POST {path}" in stack.log("b")
    # (Only this saga's: other tests on this shared system leave rows no saga owns.)
    assert [v for v in consistency(stack)["violations"] if v["saga_id"] == saga_id] == []


@pytest.mark.parametrize("forgery", ["another secret", "a changed body", "another path", "too old",
                                     "malformed"])
def test_a_forged_signature_is_refused(stack: Stack, forgery: str) -> None:
    saga_id = uuid.uuid4().hex
    body = json.dumps({"saga_id": saga_id, "address": "intruder"}).encode()
    secret, path, now, sent = stack.secret, "/invoke", time.time(), body
    if forgery == "another secret":
        secret = "x" * 64
    elif forgery == "a changed body":
        sent = json.dumps({"saga_id": saga_id, "address": "changed"}).encode()
    elif forgery == "another path":
        path = "/compensate"
    elif forgery == "too old":
        now -= 120
    signature = "t=1,v1=zz" if forgery == "malformed" else sign(secret, "POST", path, body, now=now)
    answer = requests.post(f"{stack.urls['b']}/invoke", data=sent, timeout=5,
                           headers={"Content-Type": "application/json", SIGNATURE_HEADER: signature})
    assert_json_error(answer, 401)
    assert stack.row("b", saga_id) is None


@pytest.mark.parametrize("tampering", ["a fault added", "the attempt changed", "the timeout dropped"])
def test_the_headers_a_participant_obeys_are_covered_by_the_signature(stack: Stack, tampering: str) -> None:
    """The orchestrator's call, signed over its X-Saga-* headers, then changed on the way."""
    saga_id = uuid.uuid4().hex
    body = json.dumps({"saga_id": saga_id, "address": "intruder"}).encode()
    signed = {"Content-Type": "application/json", "X-Saga-Attempt": "1", "X-Saga-Timeout": "1"}
    signed[SIGNATURE_HEADER] = sign(stack.secret, "POST", "/invoke", body, headers=signed)
    sent = dict(signed)
    if tampering == "a fault added":
        sent["X-Saga-Fault"] = "timeout"
    elif tampering == "the attempt changed":
        sent["X-Saga-Attempt"] = "2"
    else:
        del sent["X-Saga-Timeout"]
    answer = requests.post(f"{stack.urls['b']}/invoke", data=body, headers=sent, timeout=5)
    assert_json_error(answer, 401)
    assert stack.row("b", saga_id) is None
    as_signed = requests.post(f"{stack.urls['b']}/invoke", data=body, headers=signed, timeout=5)
    assert as_signed.status_code == 200, "the call as it was signed is taken"


def test_reads_stay_open(stack: Stack) -> None:
    saga_id = start(stack, fresh_user()).json()["saga_id"]
    assert requests.get(f"{stack.urls['b']}/records/{saga_id}", timeout=5).status_code == 200
    assert requests.get(f"{stack.urls['b']}/health", timeout=5).status_code == 200


# The fault switch, and bounds on what faults may hold ---------------------------------------

def test_with_faults_off_a_fault_request_is_refused_and_writes_nothing(faults_off: Stack) -> None:
    stack = faults_off
    counts = all_counts(stack)
    start_url = f"{stack.urls['orchestrator']}/start"
    for answer in (requests.post(start_url, json={**fresh_user(), "fail": {"b": "timeout"}}, timeout=10),
                   requests.post(f"{start_url}?fail_b=delay:60000", json=fresh_user(), timeout=10),
                   requests.post(f"{stack.urls['orchestrator']}/test_status",
                                 json={"service": "b", "fail": "before_commit"}, timeout=10),
                   invoke(stack, "b", uuid.uuid4().hex, **{"X-Saga-Fault": "delay:60000"})):
        assert assert_json_error(answer, 400)["error"]["code"] == "faults_disabled"
    lab = requests.post(f"{stack.urls['orchestrator']}/test_status", json={"service": "b", "fail": "lab"},
                        timeout=10)
    assert assert_json_error(lab, 400)["error"]["code"] == "invalid_fault", "the lab's own, from the lab only"
    assert all_counts(stack) == counts
    definition = requests.get(f"{stack.urls['orchestrator']}/definition", timeout=5).json()
    assert definition["faults_enabled"] is False
    assert start(stack, fresh_user()).json()["status"] == "COMPLETED", "real work goes on"


@pytest.fixture(scope="module")
def tight(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """A system with small limits: two slots for injected sleeps, two sagas in the async queue."""
    running = Stack(tmp_path_factory.mktemp("tight"), TEST_DATABASE_URL,
                    settings={"FAULT_SLEEP_SLOTS": "2", "ASYNC_QUEUE_LIMIT": "2",
                              "ORCHESTRATOR_WORKER_THREADS": "2",
                              # Room for a 3 s sleep within one call (the queue test's).
                              "CALL_TIMEOUT": "5", "LEASE_SECONDS": "20"}).start()
    yield running
    running.stop()


def test_injected_sleeps_cannot_take_every_thread(tight: Stack) -> None:
    """Both slots held by sleeping calls: a third sleep is refused rather than queued (it is
    answered while both still sleep), and a call with no fault is served. How soon the refusal
    comes is measured by `make bench`."""
    stack = tight
    with ThreadPoolExecutor(3) as pool:
        sleepers = [pool.submit(invoke, stack, "b", uuid.uuid4().hex, **{"X-Saga-Fault": "delay:5000"})
                    for _ in range(2)]
        for attempt in Retrying(stop=stop_after_delay(5), wait=wait_fixed(0.02), reraise=True):
            with attempt:
                assert stack.log("b").count("delay:5000 sleeps") == 2
        third = invoke(stack, "b", uuid.uuid4().hex, **{"X-Saga-Fault": "delay:5000"})
        real = invoke(stack, "b", uuid.uuid4().hex)
        assert not any(s.done() for s in sleepers), "answered while both slots were held: not queued"
        assert (assert_json_error(third, 503)["error"]["code"], third.headers["Retry-After"]) == (
            "fault_capacity", "1")
        assert real.status_code == 200
        assert [s.result().status_code for s in sleepers] == [200, 200]


def test_the_async_queue_is_bounded(tight: Stack) -> None:
    stack = tight
    logged = stack.count("orchestrator", "sagas")

    def slow() -> dict[str, object]:  # the first two still running at the third, however busy
        return {**fresh_user(), "fail": {"b": "delay:3000"}}

    answers = [requests.post(f"{stack.urls['orchestrator']}/start", json=slow(), timeout=10,
                             headers={"Prefer": "respond-async"}) for _ in range(3)]
    assert [a.status_code for a in answers] == [202, 202, 503]
    assert answers[2].json()["error"]["code"] == "queue_full" and answers[2].headers["Retry-After"] == "1"
    assert stack.count("orchestrator", "sagas") == logged + 2, "the refused one was never logged"
    for answer in answers[:2]:
        wait_for_saga(stack, answer.json()["saga_id"], "COMPLETED")
    assert requests.post(f"{stack.urls['orchestrator']}/start", json=slow(), timeout=10,
                         headers={"Prefer": "respond-async"}).status_code == 202, "room again"


# Cross-site requests and the dashboard's headers --------------------------------------------

@pytest.mark.parametrize(("headers", "body", "status"), [
    ({"Origin": "http://evil.example", "Content-Type": "text/plain"}, json.dumps(fresh_user()), 403),
    ({"Origin": "http://evil.example", "Content-Type": "application/x-www-form-urlencoded"},
     "username=a&address=b&payment=c", 403),
    ({"Sec-Fetch-Site": "cross-site", "Content-Type": "text/plain"}, json.dumps(fresh_user()), 403),
    ({"Sec-Fetch-Site": "same-site", "Content-Type": "application/json"}, json.dumps(fresh_user()), 403),
    ({"Origin": "null", "Content-Type": "application/json"}, json.dumps(fresh_user()), 403),
], ids=["another origin, text", "another origin, a form", "cross-site", "same-site", "a null origin"])
def test_another_site_cannot_start_a_saga(stack: Stack, headers: dict[str, str], body: str,
                                          status: int) -> None:
    counts = all_counts(stack)
    answer = requests.post(f"{stack.urls['orchestrator']}/start", data=body, headers=headers, timeout=10)
    assert_json_error(answer, status)
    assert all_counts(stack) == counts


def test_the_dashboard_itself_and_curl_still_start_sagas(stack: Stack) -> None:
    origin = stack.urls["orchestrator"]
    same_page = requests.post(f"{origin}/start", json=fresh_user(), timeout=10,
                              headers={"Origin": origin, "Sec-Fetch-Site": "same-origin"})
    assert same_page.status_code == 200, same_page.text
    as_curl_sends_it = requests.post(f"{origin}/start", data=json.dumps(fresh_user()), timeout=10,
                                     headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert as_curl_sends_it.status_code == 200, as_curl_sends_it.text
    a_page_in_text = requests.post(f"{origin}/start", data=json.dumps(fresh_user()), timeout=10,
                                   headers={"Origin": origin, "Content-Type": "text/plain"})
    assert assert_json_error(a_page_in_text, 415)["error"]["code"] == "unsupported_media_type"


@pytest.mark.parametrize("process", ["orchestrator", "a", "b", "c"])
@pytest.mark.parametrize(("method", "path"), [("GET", "/sagas"), ("POST", "/start"), ("GET", "/health"),
                                              ("GET", "/"), ("POST", "/invoke"), ("GET", "/nowhere")])
def test_a_dns_rebinding_page_is_refused_on_every_path(stack: Stack, process: str, method: str,
                                                       path: str) -> None:
    """A page at rebind.evil.example whose name now points at 127.0.0.1 reaches the process with
    its own name in Host and Origin, which are then alike: the Host allow-list refuses it."""
    counts = all_counts(stack)
    port = stack.ports[process]
    answer = requests.request(method, f"{stack.urls[process]}{path}", json=fresh_user(), timeout=10,
                              headers={"Host": f"rebind.evil.example:{port}",
                                       "Origin": f"http://rebind.evil.example:{port}"})
    assert assert_json_error(answer, 400)["error"]["code"] == "unknown_host"
    assert all_counts(stack) == counts


def test_an_origin_is_compared_with_the_allowed_origins_not_with_the_host(stack: Stack) -> None:
    port = stack.ports["orchestrator"]
    counts = all_counts(stack)
    for origin in (f"http://localhost:{port + 1}", f"https://127.0.0.1:{port}", "http://127.0.0.1"):
        answer = requests.post(f"{stack.urls['orchestrator']}/start", json=fresh_user(), timeout=10,
                               headers={"Origin": origin})
        assert_json_error(answer, 403)
    assert all_counts(stack) == counts
    by_its_other_name = requests.post(f"http://localhost:{port}/start", json=fresh_user(), timeout=10,
                                      headers={"Origin": f"http://localhost:{port}"})
    assert by_its_other_name.status_code == 200, by_its_other_name.text


def test_the_dashboard_sends_security_headers_and_has_an_icon(stack: Stack) -> None:
    page = requests.get(f"{stack.urls['orchestrator']}/", timeout=5)
    policy = page.headers["Content-Security-Policy"]
    assert "script-src 'self'" in policy and "frame-ancestors 'none'" in policy
    assert page.headers["X-Content-Type-Options"] == "nosniff"
    assert page.headers["X-Frame-Options"] == "DENY"
    assert page.headers["Referrer-Policy"] == "no-referrer"
    icon = requests.get(f"{stack.urls['orchestrator']}/favicon.ico", timeout=5)
    assert icon.status_code == 200 and icon.headers["Content-Type"].startswith("image/svg+xml")


# Bad input ------------------------------------------------------------------------------------

@pytest.mark.parametrize(("process", "path"), [
    ("orchestrator", "/sagas?limit=%C2%B2"), ("orchestrator", "/logs?after=%C2%B2"),
    ("b", "/records?after=%C2%B2"), ("b", "/records?after=99999999999999999999"),
    ("b", "/records?limit=-1"),
])
def test_odd_numbers_are_400_not_500(stack: Stack, process: str, path: str) -> None:
    assert_json_error(requests.get(f"{stack.urls[process]}{path}", timeout=5), 400)


HOSTILE_BODIES = [
    ("nested arrays", "[" * 20_000 + "]" * 20_000),
    ("nested in a field", json.dumps({**fresh_user(), "fail": {}})[:-2] + "[" * 20_000 + "]" * 20_000 + "}}"),
    ("a lone surrogate", json.dumps({**fresh_user(), "username": "\ud800x"})),
    ("a newline", json.dumps({**fresh_user(), "username": "ada\n2026-11-27 INFO forged line"})),
    ("fail 0", json.dumps({**fresh_user(), "fail": 0})),
    ("fail []", json.dumps({**fresh_user(), "fail": []})),
    ("fail false", json.dumps({**fresh_user(), "fail": False})),
]


@pytest.mark.parametrize(("case", "body"), HOSTILE_BODIES, ids=[case for case, _ in HOSTILE_BODIES])
def test_hostile_bodies_are_400_and_write_nothing(stack: Stack, case: str, body: str) -> None:
    counts = all_counts(stack)
    answer = requests.post(f"{stack.urls['orchestrator']}/start", data=body.encode(), timeout=10,
                           headers={"Content-Type": "application/json"})
    assert_json_error(answer, 400)
    assert all_counts(stack) == counts
    assert "forged line" not in stack.log("orchestrator")


@pytest.mark.parametrize("key", ["k" * 129, "with space", "ünïcode"])
def test_a_bad_idempotency_key_is_400(stack: Stack, key: str) -> None:
    answer = requests.post(f"{stack.urls['orchestrator']}/start", json=fresh_user(), timeout=10,
                           headers={"Idempotency-Key": key.encode().decode("latin-1")})
    assert assert_json_error(answer, 400)["error"]["code"] == "invalid_idempotency_key"


def raw_request(url: str, request: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send bytes as they are (requests would refuse to), read the answer."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=5) as conn:
        conn.sendall(request)
        answer = b""
        while chunk := conn.recv(65536):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:])
    return int(lines[0].split()[1]), headers, body


@pytest.mark.parametrize(("request_bytes", "status"), [
    (b"GET /" + b"x" * 10_000 + b" HTTP/1.1\r\nHost: h\r\n\r\n", 414),
    (b"GET / HTTP/1.1\r\nHost: h\r\nX-Big: " + b"x" * 10_000 + b"\r\n\r\n", 431),
])
def test_what_gunicorn_refuses_itself_is_json_too(stack: Stack, request_bytes: bytes, status: int) -> None:
    code, headers, body = raw_request(stack.urls["a"], request_bytes)
    assert code == status
    assert headers["Content-Type"] == "application/json"
    assert json.loads(body)["error"]["code"]


# A lost database --------------------------------------------------------------------------------

# A database that stops answering is a 503 (by design within 2 × DB_TIMEOUT = 4 s: a pooled
# connection's ping times out, then the one reconnect's wait for the server's greeting does), never
# a hang: each request here gives up after 10 s. How soon is not timed here (a suite sharing two
# cores cannot), nor yet by `make bench` (docs/performance.md).


def assert_database_down(stack: Stack, service: str, state: str, reads_work: bool = False) -> None:
    """Every endpoint of `service` that needs its database (to write it, or to read it, unless
    `reads_work`) answers 503 with Retry-After, and its health says why."""
    url = stack.urls[service]
    calls = [lambda: requests.get(f"{url}/health", timeout=10),
             lambda: invoke(stack, service, uuid.uuid4().hex)]
    if not reads_work:
        calls.append(lambda: requests.get(f"{url}/records", timeout=10))
    for call in calls:
        answer = call()
        assert answer.status_code == 503, answer.text
        assert "Retry-After" in answer.headers
    health = requests.get(f"{url}/health", timeout=10).json()
    assert (health["status"], health["database"]) == ("unhealthy", state)
    assert "Error" not in json.dumps(health) and "pymysql" not in json.dumps(health).lower()


def assert_back(stack: Stack, service: str) -> None:
    """Healthy again, and writing: a tombstone for a saga nobody runs (no applied row stays)."""
    for attempt in Retrying(stop=stop_after_delay(15), wait=wait_fixed(0.2), reraise=True):
        with attempt:
            assert requests.get(f"{stack.urls[service]}/health", timeout=10).status_code == 200
    assert compensate(stack, service, uuid.uuid4().hex).json()["status"] == "CANCELLED"


@pytest.mark.skipif(TEST_DATABASE_URL is not None, reason="SQLite: its leg of the suite")
def test_an_unwritable_sqlite_file_is_a_503_until_it_is_writable_again(fresh_stack: Stack) -> None:
    stack = fresh_stack
    path = Path(make_url(stack.db_urls["b"]).database or "")
    files = [p for p in (path, Path(f"{path}-wal"), Path(f"{path}-shm")) if p.exists()]
    subprocess.run(["chattr", "+i", *map(str, files)], check=True)
    try:
        assert_database_down(stack, "b", "read_only", reads_work=True)
        assert requests.get(f"{stack.urls['b']}/records", timeout=5).status_code == 200
        # B can neither apply nor leave its tombstone: the saga stops, visibly, before undoing A.
        stuck = start(stack, fresh_user())
        assert (stuck.status_code, stuck.json()["status"], stuck.json()["failed_step"]) == (
            500, "COMPENSATION_FAILED", "b")
    finally:
        subprocess.run(["chattr", "-i", *map(str, files)], check=True)
    assert_back(stack, "b")
    retried = requests.post(f"{stack.urls['orchestrator']}/sagas/{stuck.json()['saga_id']}/retry", timeout=30)
    assert retried.json()["status"] == "COMPENSATED"
    assert start(stack, fresh_user()).json()["status"] == "COMPLETED"
    assert consistency(stack)["violations"] == []


def through_a_proxy(stack: Stack, process: str) -> TcpProxy:
    """Restart `process` reaching its MySQL database through a proxy the test can silence or cut."""
    url = make_url(stack.db_urls[process])
    proxy = TcpProxy((url.host or "127.0.0.1", url.port or 3306))
    stack.kill(process)
    variable = ("ORCHESTRATOR_DATABASE_URL" if process == "orchestrator"
                else f"SERVICE_{process.upper()}_DATABASE_URL")
    proxied = url.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)
    stack.start_process(process, extra_env={variable: proxied})
    stack.wait_healthy(process)
    return proxy


@pytest.fixture
def proxied_b(fresh_stack: Stack) -> Iterator[tuple[Stack, TcpProxy]]:
    proxy = through_a_proxy(fresh_stack, "b")
    yield fresh_stack, proxy
    proxy.forward()


@pytest.mark.skipif(TEST_DATABASE_URL is None, reason="a database server on the network: MySQL/MariaDB only")
@pytest.mark.parametrize(("outage", "state"), [("silent", "not_answering"), ("closed", "refused")])
def test_a_database_that_stops_answering_is_a_503_and_recovers(
        proxied_b: tuple[Stack, TcpProxy], outage: str, state: str) -> None:
    stack, proxy = proxied_b
    assert start(stack, fresh_user()).json()["status"] == "COMPLETED"
    getattr(proxy, outage)()
    assert_database_down(stack, "b", state)
    if outage == "closed":  # the orchestrator sees B fail at once, and undoes A
        answer = start(stack, fresh_user())
        assert answer.json()["status"] in ("COMPENSATED", "COMPENSATION_FAILED"), answer.text
    proxy.forward()
    assert_back(stack, "b")
    assert start(stack, fresh_user()).json()["status"] == "COMPLETED"
    assert consistency(stack)["violations"] == []


@pytest.mark.skipif(TEST_DATABASE_URL is None, reason="a database server on the network: MySQL/MariaDB only")
def test_the_orchestrator_without_its_database_answers_503_and_recovers(fresh_stack: Stack) -> None:
    stack = fresh_stack
    proxy = through_a_proxy(stack, "orchestrator")
    try:
        proxy.silent()
        for call in (lambda: requests.post(f"{stack.urls['orchestrator']}/start", json=fresh_user(),
                                           timeout=10),
                     lambda: requests.get(f"{stack.urls['orchestrator']}/sagas", timeout=10),
                     lambda: requests.get(f"{stack.urls['orchestrator']}/health", timeout=10)):
            answer = call()
            assert answer.status_code == 503, answer.text
            assert answer.headers["Retry-After"]
    finally:
        proxy.forward()
    for attempt in Retrying(stop=stop_after_delay(15), wait=wait_fixed(0.2), reraise=True):
        with attempt:
            assert requests.get(f"{stack.urls['orchestrator']}/health", timeout=10).status_code == 200
    assert start(stack, fresh_user()).json()["status"] == "COMPLETED"
