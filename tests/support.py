"""What the tests share: the database they run on, starting sagas, waiting, reading answers."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import uuid
from pathlib import Path
from typing import Any

import requests
from sqlalchemy import text
from tenacity import Retrying, stop_after_delay, wait_fixed

from orchestrator.client import Attempt
from scripts.stack import Stack, free_port

TEST_DATABASE_URL = os.environ.get("TEST_DATABASE_URL") or None

INVOKE_ATTEMPTS = 3  # CALL_RETRIES=2 in the test settings
COMPENSATE_ATTEMPTS = 4  # COMPENSATION_RETRIES=3
USER = {"username": "ada", "address": "1 Main St", "payment": "visa"}
FIELDS = {"a": "username", "b": "address", "c": "payment"}


def start(stack: Stack, user: dict[str, str], **fail: str) -> requests.Response:
    """POST /start and wait for the saga's end."""
    body: dict[str, Any] = dict(user)
    if fail:
        body["fail"] = fail
    return requests.post(f"{stack.urls['orchestrator']}/start", json=body, timeout=60)


def start_async(stack: Stack, **fail: str) -> str:
    """POST /start with Prefer: respond-async; the saga's id."""
    body = {**USER, "fail": fail}
    answer = requests.post(f"{stack.urls['orchestrator']}/start", json=body,
                           headers={"Prefer": "respond-async"}, timeout=10)
    assert answer.status_code == 202, answer.text
    return str(answer.json()["saga_id"])


def wait_for_saga(stack: Stack, saga_id: str, status: str, current_step: int | None = None,
                  seconds: float = 30) -> dict[str, Any]:
    """Poll the saga log itself (not the API: the orchestrator may be dead) until it matches."""
    for attempt in Retrying(stop=stop_after_delay(seconds), wait=wait_fixed(0.01), reraise=True):
        with attempt:
            row = stack.saga_row(saga_id)
            assert row is not None and row["status"] == status, row
            assert current_step is None or row["current_step"] == current_step, row
    return row


def assert_rows(stack: Stack, saga_id: str, user: dict[str, str], expected: dict[str, str | None]) -> None:
    """Each participant's row for the saga has the expected status (None: no row at all)."""
    for service, status in expected.items():
        row = stack.row(service, saga_id)
        if status is None:
            assert row is None, f"{service} should hold no row, holds {row}"
            continue
        assert row is not None, f"{service} should hold a {status} row, holds none"
        assert row["status"] == status, f"{service}: {row['status']} != {status}"
        want_value = None if status == "CANCELLED" else user[FIELDS[service]]
        assert row["value"] == want_value, f"{service} stored {row['value']!r}"


def consistency(stack: Stack, process: str = "orchestrator", limit: int = 1000) -> dict[str, Any]:
    """The consistency report of every page, which must have read every service."""
    total: dict[str, Any] = {"checked": 0, "in_progress": 0, "needs_attention": [], "violations": [],
                             "pages": 0}
    after = ""
    while True:
        params = {"limit": str(limit), **({"after": after} if after else {})}
        report = requests.get(f"{stack.urls[process]}/consistency", params=params, timeout=60).json()
        assert "unreachable" not in report, report
        total["pages"] += 1
        for key in ("checked", "in_progress"):
            total[key] += report[key]
        for key in ("needs_attention", "violations"):
            total[key] += report[key]
        if report["next"] is None:
            assert report["complete"], report
            return {**total, "ok": not total["violations"], "complete": True}
        assert not report["complete"], report
        after = report["next"]


def invoke(stack: Stack, service: str, saga_id: str, value: str = "v", **headers: str) -> requests.Response:
    """A participant's /invoke, called directly (signed, as the orchestrator calls it)."""
    return stack.signed_post(service, "/invoke", {"saga_id": saga_id, FIELDS[service]: value}, **headers)


def compensate(stack: Stack, service: str, saga_id: str, action: str = "compensate") -> requests.Response:
    """A participant's /compensate (or /cancel), called directly (signed)."""
    return stack.signed_post(service, f"/{action}", {"saga_id": saga_id})


def assert_json_error(response: requests.Response, status: int) -> dict[str, Any]:
    """A JSON error of the house shape with `status`, and no stack trace in it."""
    assert response.status_code == status, response.text
    assert response.headers["Content-Type"].startswith("application/json")
    body = response.json()
    assert body["error"]["code"] and body["error"]["message"]
    assert "Traceback" not in response.text
    return body  # type: ignore[no-any-return]


CODES = {"ok": 200, "applied": 200, "error": 500, "rejected": 409, "timeout": None, "unreachable": None}


class ScriptedParticipants:
    """Answers each attempt as scripted for (participant, action): a list of outcomes taken in
    turn (the last one repeats), "ok" when nothing is scripted. "applied" is a cancel's 200
    that says the step had committed."""

    def __init__(self, script: dict[tuple[str, str], list[str]]) -> None:
        self.script = script
        self.calls: list[tuple[str, str, int]] = []
        self.payloads: dict[str, dict[str, Any]] = {}

    def attempt(self, url: str, payload: dict[str, Any], *, number: int, timeout: float,
                fault: str | None = None) -> Attempt:
        participant, action = url.rsplit("/", 2)[-2:]
        outcomes = self.script.get((participant, action), ["ok"])
        made = sum(1 for p, a, _ in self.calls if (p, a) == (participant, action))
        outcome = outcomes[min(made, len(outcomes) - 1)]
        self.calls.append((participant, action, number))
        self.payloads[participant] = payload
        if outcome in ("ok", "applied"):
            status = "APPLIED" if outcome == "applied" or action == "invoke" else (
                "CANCELLED" if action == "cancel" else "COMPENSATED")
            return Attempt(number, 200, "ok", 1, None, {"status": status})
        return Attempt(number, CODES[outcome], outcome, 1, outcome, {})

    def actions(self, action: str) -> list[str]:
        return [participant for participant, a, _ in self.calls if a == action]

    def numbers(self, participant: str, action: str) -> list[int]:
        return [n for p, a, n in self.calls if (p, a) == (participant, action)]


class TcpProxy:
    """A TCP forwarder in front of a server (a database), which a test can make go silent
    (connections accepted and bytes taken, nothing ever answered) or closed (every connection
    cut, new ones refused), and then bring back."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.port = 0
        self.mode = "forward"
        self._listener: socket.socket | None = None
        self._sockets: list[socket.socket] = []
        self._guard = threading.Lock()
        self._open()

    def _open(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self.port = listener.getsockname()[1]
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            with self._guard:
                self._sockets.append(client)
            if self.mode == "silent":
                threading.Thread(target=self._swallow, args=(client,), daemon=True).start()
                continue
            try:
                server = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            with self._guard:
                self._sockets.append(server)
            for source, sink in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                if self.mode == "forward":
                    sink.sendall(data)  # silent: taken and dropped
        except OSError:
            pass
        finally:
            for end in (source, sink):
                with contextlib.suppress(OSError):
                    end.shutdown(socket.SHUT_RDWR)

    @staticmethod
    def _swallow(client: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while client.recv(65536):
                pass

    def silent(self) -> None:
        self.mode = "silent"

    def closed(self) -> None:
        self.mode = "closed"
        assert self._listener is not None
        with contextlib.suppress(OSError):  # wakes the thread blocked in accept()
            self._listener.shutdown(socket.SHUT_RDWR)
        self._listener.close()
        with self._guard:
            for sock in self._sockets:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()
            self._sockets.clear()

    def forward(self) -> None:
        if self.mode == "closed":
            self._open()
        else:  # the silent connections stay broken, as after a real outage
            self.closed()
            self._open()
        self.mode = "forward"


# The choreographed saga --------------------------------------------------------------------------

BROKER_URL = os.environ.get("TEST_BROKER_URL") or "amqp://guest:guest@127.0.0.1:5672/%2F"
TRANSPORTS = {"embedded": {}, "rabbitmq": {"BROKER_URL": BROKER_URL}}
FINISHED = ("COMPLETED", "COMPENSATED", "COMPENSATION_FAILED")


def sign_up(stack: Stack, user: dict[str, str] | None = None, **fail: str) -> str:
    """POST /signups at A (202 at once); the saga's id."""
    body: dict[str, Any] = {**(user or USER), **({"fail": fail} if fail else {})}
    answer = requests.post(f"{stack.urls['a']}/signups", json=body, timeout=30)
    assert answer.status_code == 202, answer.text
    assert answer.json()["status"] == "RUNNING"
    return str(answer.json()["saga_id"])


def choreographed(stack: Stack, saga_id: str, seconds: float = 30,
                  statuses: tuple[str, ...] = FINISHED, events: int = 0) -> dict[str, Any]:
    """The saga as the observer tells it, once its status is one of `statuses` and it has seen
    at least `events` events (each service's relay tells it in its own time, so the event that
    ends a saga may come before one that happened earlier)."""
    for attempt in Retrying(stop=stop_after_delay(seconds), wait=wait_fixed(0.05), reraise=True):
        with attempt:
            answer = requests.get(f"{stack.urls['orchestrator']}/choreography/sagas/{saga_id}",
                                  params={"wait": 2} if statuses == FINISHED else {}, timeout=10)
            assert answer.status_code == 200, answer.text
            saga = answer.json()
            assert saga["status"] in statuses and len(saga["events"]) >= events, saga
    return saga  # type: ignore[no-any-return]


def event_types(saga: dict[str, Any]) -> list[str]:
    return [event["type"] for event in saga["events"]]


def assert_all_or_nothing(stack: Stack, saga_ids: list[str], seconds: float = 60) -> list[str]:
    """Every choreographed saga ended, each event happened once, each table holds at most one
    row a saga, and the consistency check finds nothing. The final statuses."""
    statuses = []
    for saga_id in saga_ids:
        saga = choreographed(stack, saga_id, seconds=seconds, statuses=("COMPLETED", "COMPENSATED"))
        types = event_types(saga)
        assert len(types) == len(set(types)), f"an event happened twice: {types}"
        statuses.append(saga["status"])
    for service, table in (("a", "table_a"), ("b", "table_b"), ("c", "table_c")):
        with stack.engines[service].connect() as connection:
            twice = connection.execute(text(f"SELECT saga_id FROM {table} GROUP BY saga_id "
                                            "HAVING COUNT(*) > 1")).all()
        assert twice == []
    report = consistency(stack)
    assert report["violations"] == [], report["violations"][:5]
    return statuses


class PrivateBroker:
    """A RabbitMQ node of a test's own (its own ports, data and log directories, on this
    machine's rabbitmq-server), for what must not disturb the tests sharing the machine's
    broker: stopping and starting it. Its guest account reaches it from this machine."""

    def __init__(self) -> None:
        # Its own directory under /tmp: the server runs as the rabbitmq user, who may not enter
        # pytest's directories (they are their owner's alone).
        self.workdir = Path(tempfile.mkdtemp(prefix="saga-rabbitmq-"))
        self.port = free_port()
        self.node = f"saga-test-{uuid.uuid4().hex[:8]}@localhost"
        self.url = f"amqp://guest:guest@127.0.0.1:{self.port}/%2F"

    def ctl(self, *args: str) -> None:
        subprocess.run(["rabbitmqctl", "-q", "-n", self.node, *args], check=True, capture_output=True,
                       timeout=120)

    def start(self) -> PrivateBroker:
        (self.workdir / "rabbitmq.conf").write_text(f"listeners.tcp.local = 127.0.0.1:{self.port}\n")
        shutil.chown(self.workdir, "rabbitmq", "rabbitmq")  # the server runs as rabbitmq
        env = {**os.environ, "RABBITMQ_NODENAME": self.node, "RABBITMQ_DIST_PORT": str(free_port()),
               "RABBITMQ_CONFIG_FILE": str(self.workdir / "rabbitmq"),
               "RABBITMQ_MNESIA_BASE": str(self.workdir / "mnesia"),
               "RABBITMQ_LOG_BASE": str(self.workdir / "log"), "RABBITMQ_PID_FILE": str(self.workdir / "pid"),
               "RABBITMQ_ENABLED_PLUGINS_FILE": str(self.workdir / "plugins")}
        subprocess.run(["rabbitmq-server", "-detached"], env=env, check=True, capture_output=True, timeout=60)
        for attempt in Retrying(stop=stop_after_delay(60), wait=wait_fixed(0.3), reraise=True):
            with attempt:
                self.ctl("await_startup")
        return self

    def stop(self) -> None:
        with contextlib.suppress(subprocess.SubprocessError):
            self.ctl("stop")
        shutil.rmtree(self.workdir, ignore_errors=True)


class OtlpReceiver:
    """An OTLP/HTTP trace receiver on a free port that keeps every span it is sent, in memory:
    what Jaeger or any OpenTelemetry back end would get from the four processes."""

    def __init__(self) -> None:
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

        self.spans: list[dict[str, Any]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                request = ExportTraceServiceRequest()
                request.ParseFromString(self.rfile.read(int(self.headers["Content-Length"])))
                for resource_spans in request.resource_spans:
                    service = next(a.value.string_value for a in resource_spans.resource.attributes
                                   if a.key == "service.name")
                    for scope in resource_spans.scope_spans:
                        for span in scope.spans:
                            receiver.spans.append({
                                "service": service, "name": span.name, "trace_id": span.trace_id.hex(),
                                "span_id": span.span_id.hex(), "parent_id": span.parent_span_id.hex() or None,
                                "attributes": {a.key: getattr(a.value, a.value.WhichOneof("value"))
                                               for a in span.attributes}})
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def of_trace(self, trace_id: str) -> list[dict[str, Any]]:
        return [span for span in self.spans if span["trace_id"] == trace_id]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
