"""The real HTTP client under the engine, against a real local HTTP server: what is retried."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest
from werkzeug import Request, Response
from werkzeug.serving import make_server

from common.consistency import Unreachable
from common.db import make_engine
from common.declaration import Definitions
from common.status import SagaStatus
from orchestrator.client import ParticipantClient
from orchestrator.engine import Defaults, SagaEngine
from orchestrator.gateway import READ_ATTEMPTS, ParticipantGateway
from orchestrator.migrate import upgrade
from orchestrator.store import SagaStore
from sagas.signup import SIGNUP_V1
from tests.support.people import fresh_user


class Participant:
    """Answers /invoke with a set status for service B and 200 for everything else; counts calls."""

    def __init__(self, invoke_b: int) -> None:
        self.invoke_b = invoke_b
        self.calls: list[str] = []

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        request = Request(environ)
        self.calls.append(request.path)
        status = self.invoke_b if request.path == "/b/invoke" else 200
        undo = request.path.endswith("/compensate")
        body = '{"status": "COMPENSATED"}' if undo else '{"status": "APPLIED"}'
        if status >= 400:
            body = '{"error": {"code": "nope", "message": "refused"}}'
        return Response(body, status, mimetype="application/json")(environ, start_response)


@pytest.fixture
def serve() -> Iterator[Callable[[Participant], str]]:
    servers = []

    def start(app: Participant) -> str:
        server = make_server("127.0.0.1", 0, app, threaded=True)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_port}"

    yield start
    for server in servers:
        server.shutdown()


def engine_against(url: str, tmp_path: Path) -> SagaEngine:
    database = make_engine(f"sqlite:///{tmp_path / 'log.db'}")
    upgrade(database)
    defaults = Defaults(timeout=2, retries=2, compensation_retries=2, backoff=0, backoff_max=0, jitter=0)
    return SagaEngine(Definitions.of((SIGNUP_V1,), "signup@1"), {s: f"{url}/{s}" for s in "abc"},
                      SagaStore(database, 30), ParticipantClient("s" * 32), owner="me", defaults=defaults)


@pytest.mark.parametrize("status", [400, 409, 422])
def test_a_4xx_is_never_retried(serve: Callable[[Participant], str], tmp_path: Path, status: int) -> None:
    participant = Participant(invoke_b=status)
    engine = engine_against(serve(participant), tmp_path)
    saga = engine.drive(engine.create(fresh_user(), {}).id)
    assert (saga.status, saga.failed_step) == (SagaStatus.COMPENSATED, "b")
    assert participant.calls == ["/a/invoke", "/b/invoke", "/b/compensate", "/a/compensate"]
    assert saga.error == "step b: refused"


def test_a_5xx_is_retried_up_to_the_budget(serve: Callable[[Participant], str], tmp_path: Path) -> None:
    participant = Participant(invoke_b=503)
    engine = engine_against(serve(participant), tmp_path)
    engine.drive(engine.create(fresh_user(), {}).id)
    assert participant.calls.count("/b/invoke") == 3, "CALL_RETRIES=2"


class Rows:
    """GET /records/<id> answers the statuses in `script` in turn (then the last), counting calls."""

    def __init__(self, *script: int) -> None:
        self.script = list(script)
        self.calls = 0

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        status = self.script[min(self.calls, len(self.script) - 1)]
        self.calls += 1
        body = '{"saga_id": "s1", "status": "APPLIED"}' if status == 200 else '{"error": {}}'
        return Response(body, status, mimetype="application/json")(environ, start_response)


@pytest.mark.parametrize(("script", "calls", "expected"), [
    ((503, 200), 2, {"saga_id": "s1", "status": "APPLIED"}),  # a busy moment is asked again
    ((404,), 1, None),  # no row is an answer, at once
])
def test_the_gateway_asks_a_busy_participant_again(serve: Callable[[Any], str], script: tuple[int, ...],
                                                   calls: int, expected: dict[str, str] | None) -> None:
    rows = Rows(*script)
    gateway = ParticipantGateway(ParticipantClient("s" * 32), {"a": serve(rows)}, {"a": ("username",)})
    assert gateway.record("a", "s1") == expected
    assert rows.calls == calls


def test_the_gateway_gives_up_on_a_participant_that_stays_busy(serve: Callable[[Any], str]) -> None:
    rows = Rows(503)
    gateway = ParticipantGateway(ParticipantClient("s" * 32), {"a": serve(rows)}, {"a": ("username",)})
    with pytest.raises(Unreachable, match="HTTP 503"):
        gateway.record("a", "s1")
    with pytest.raises(Unreachable):
        list(gateway.records_between("a", "", None))
    assert rows.calls == 2 * READ_ATTEMPTS
