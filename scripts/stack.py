"""Start the four real processes on free loopback ports, each with its own database."""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import random
import secrets
import signal
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests
from sqlalchemy import Engine, create_engine, make_url, text
from tenacity import Retrying, retry_if_exception_type, stop_after_delay, wait_fixed

from choreography.flow import Flows
from common.declaration import Declaration, load
from common.signing import SIGNATURE_HEADER, sign
from messaging.routes import Routes

ROOT = Path(__file__).resolve().parent.parent
SIGNUP = load({})  # the shipped saga's declaration (sagas/signup.py)
PROCESSES = ("orchestrator", *(service.name for service in SIGNUP.services))

# Short timeouts and backoffs so that every failure scenario runs in seconds; faults on.
FAST_SETTINGS = {
    "FAULTS_ENABLED": "1",
    "FAULT_SLEEP_SLOTS": "32",  # the concurrent tests sleep in many sagas at once
    "CALL_TIMEOUT": "1.0",
    "CALL_RETRIES": "2",
    "COMPENSATION_RETRIES": "3",
    "RETRY_BACKOFF": "0.05",
    "RETRY_BACKOFF_MAX": "0.2",
    "LEASE_SECONDS": "3",
    "RECOVERY_INTERVAL": "0.2",
    "FAULT_LATE_MARGIN": "1.0",
    # The choreographed saga's deadline, and how often its loops look without being woken.
    "CHOREOGRAPHY_DEADLINE": "4",
    "CHOREOGRAPHY_POLL": "0.2",
    # The recovery loop leaves COMPENSATION_FAILED sagas alone unless a test asks
    # (RECOVERS_FAILED_COMPENSATIONS), so that they stay as the test left them.
    "COMPENSATION_RETRY_AFTER": "3600",
}
RECOVERS_FAILED_COMPENSATIONS = {"COMPENSATION_RETRY_AFTER": "1"}


def party(process: str) -> str:
    """Who a process is on the broker: the service's name, or the observer (the orchestrator's)."""
    return "observer" if process == "orchestrator" else process


PORTS = range(20000, 32000)  # below Linux's ephemeral range (32768-60999), which connections take
SLICE = len(PORTS) // 8  # each test worker's share
_walk = itertools.count(random.randrange(SLICE))  # this process's walk through its slice


def free_port() -> int:
    """A loopback port nothing listens on, for a process about to start. Taken from below the
    ephemeral range, where no outgoing connection can take it before the process binds it; from
    a slice of its own for each test worker (PYTEST_XDIST_WORKER), so two never pick one; and
    walked through in turn, so a port comes round again only after the whole slice."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw")
    first = PORTS.start + (int(worker) % 8 if worker.isdigit() else 0) * SLICE
    for _ in range(SLICE):
        port = first + next(_walk) % SLICE
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
        return port
    raise RuntimeError(f"no free port left in {first}-{first + SLICE - 1}")


def database_urls(base_url: str | None, workdir: Path, tag: str,
                  names: tuple[str, ...] = PROCESSES) -> dict[str, str]:
    """One database per process: SQLite files in `workdir`, or fresh MySQL databases."""
    if not base_url:
        return {name: f"sqlite:///{workdir / name}.db" for name in names}
    admin = create_engine(base_url, isolation_level="AUTOCOMMIT")
    urls = {}
    with admin.connect() as connection:
        for name in names:
            database = f"saga_test_{tag}_{name}"
            connection.execute(text(f"DROP DATABASE IF EXISTS `{database}`"))
            connection.execute(text(f"CREATE DATABASE `{database}`"))
            urls[name] = make_url(base_url).set(database=database).render_as_string(
                hide_password=False)
    admin.dispose()
    return urls


def drop_databases(base_url: str | None, urls: dict[str, str]) -> None:
    if not base_url:
        return
    admin = create_engine(base_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        for url in urls.values():
            connection.execute(text(f"DROP DATABASE IF EXISTS `{make_url(url).database}`"))
    admin.dispose()


@dataclass
class Stack:
    """The orchestrator and the saga's services (A, B, C) as real gunicorn processes; with
    SAGA_DECLARATION in `settings`, another saga's, each service started from `apps`
    (name -> `module:app`) or from `service_<name>.wsgi:app`."""

    workdir: Path
    base_db_url: str | None = None
    settings: dict[str, str] = field(default_factory=dict)
    apps: dict[str, str] = field(default_factory=dict)
    tag: str = field(default_factory=lambda: uuid.uuid4().hex[:8])
    secret: str = field(default_factory=lambda: secrets.token_hex(32))
    ports: dict[str, int] = field(default_factory=dict)
    urls: dict[str, str] = field(default_factory=dict)
    db_urls: dict[str, str] = field(default_factory=dict)
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    engines: dict[str, Engine] = field(default_factory=dict)
    broker_urls: dict[str, str] = field(default_factory=dict)  # each process's own account

    @property
    def namespace(self) -> str:
        return f"saga-test-{self.tag}"

    @property
    def declaration(self) -> Declaration:
        return load(self.settings)

    @property
    def names(self) -> tuple[str, ...]:
        """The processes: the orchestrator, then each service of the saga."""
        return ("orchestrator", *(service.name for service in self.declaration.services))

    def start(self) -> Stack:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.db_urls = database_urls(self.base_db_url, self.workdir, self.tag, self.names)
        self.ports = {name: free_port() for name in self.names}
        self.urls = {name: f"http://127.0.0.1:{port}" for name, port in self.ports.items()}
        self.broker_urls = self.broker_accounts()
        try:
            for name in self.names:
                self.start_process(name)
            for name in self.names:
                self.wait_healthy(name)
        except BaseException:  # one did not come up: leave nothing running behind
            self.stop()
            raise
        # Autocommit: every read sees what is committed now (no REPEATABLE READ snapshot).
        self.engines = {name: create_engine(url, isolation_level="AUTOCOMMIT")
                        for name, url in self.db_urls.items()}
        return self

    def broker_accounts(self) -> dict[str, str]:
        """Over RabbitMQ, each process's URL: its own account (made here, for this run's
        namespace), unless the settings say BROKER_ACCOUNTS=shared (all on the one URL given)."""
        url = self.settings.get("BROKER_URL")
        if not url:
            return {}
        if self.settings.get("BROKER_ACCOUNTS") == "shared":
            return dict.fromkeys(self.names, url)
        from messaging.broker_accounts import install, url_for, vhost_of
        from messaging.rabbitmq import account_name

        passwords = {party(name): secrets.token_hex(16) for name in self.names}
        install(self.namespace, passwords, self.routes, vhost_of(url),
                node=self.settings.get("BROKER_NODE"))
        return {name: url_for(url, account_name(self.namespace, party(name)), passwords[party(name)])
                for name in self.names}

    @property
    def routes(self) -> Routes:
        """Who publishes each event of the saga, and who takes it (the broker's bindings)."""
        return Flows.load(self.settings).routes

    @property
    def transport(self) -> str:
        """How the choreographed saga's events travel here."""
        return "rabbitmq" if self.settings.get("BROKER_URL") else "embedded"

    def env(self, name: str, extra: dict[str, str] | None = None) -> dict[str, str]:
        """The environment of process `name`: the test settings, then the stack's, then `extra`."""
        env = {**os.environ, **FAST_SETTINGS, "SERVICE_SECRET": self.secret,
               "ORCHESTRATOR_ID": f"test-orchestrator-{self.tag}", "GUNICORN_THREADS": "16",
               "ORCHESTRATOR_DATABASE_URL": self.db_urls["orchestrator"],
               "OBSERVER_URL": self.urls["orchestrator"], "BROKER_NAMESPACE": self.namespace,
               "ALLOWED_ORIGINS": ",".join(f"http://{host}:{self.ports['orchestrator']}"
                                           for host in ("127.0.0.1", "localhost"))}
        for service in self.names[1:]:
            env[f"SERVICE_{service.upper()}_URL"] = self.urls[service]
            env[f"SERVICE_{service.upper()}_DATABASE_URL"] = self.db_urls[service]
        own = {"BROKER_URL": self.broker_urls[name]} if name in self.broker_urls else {}
        return {**env, **self.settings, **own, **(extra or {})}

    def start_process(self, name: str, port: int | None = None, extra_env: dict[str, str] | None = None,
                      label: str | None = None, app: str | None = None) -> None:
        """Start process `name` (its `module:app` unless `app` says another) as `label`, under
        gunicorn, its output in `label`.log."""
        module = "orchestrator" if name == "orchestrator" else f"service_{name}"
        app = app or self.apps.get(name) or f"{module}.wsgi:app"
        label = label or name
        with open(self.workdir / f"{label}.log", "ab") as log:  # the child keeps its own copy
            self.processes[label] = subprocess.Popen(
                [sys.executable, "-m", "gunicorn", "--config", "gunicorn.conf.py",
                 "--bind", f"127.0.0.1:{port or self.ports[name]}", app],
                cwd=ROOT, env=self.env(name, extra_env), stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True)

    def wait_healthy(self, name: str, url: str | None = None, seconds: float = 60) -> None:
        for attempt in Retrying(stop=stop_after_delay(seconds), wait=wait_fixed(0.1),
                                retry=retry_if_exception_type(Exception), reraise=True):
            with attempt:
                process = self.processes[name]
                assert process.poll() is None, f"{name} exited; see {self.workdir}/{name}.log"
                response = requests.get(f"{url or self.urls[name]}/health", timeout=1)
                assert response.status_code == 200, response.text

    def kill(self, label: str) -> None:
        """SIGKILL a process and everything it started: no clean shutdown, as in a crash."""
        process = self.processes.pop(label)
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)

    def restart(self, name: str, extra_env: dict[str, str] | None = None) -> None:
        self.start_process(name, extra_env=extra_env)
        self.wait_healthy(name)

    def log(self, label: str) -> str:
        return (self.workdir / f"{label}.log").read_text(errors="replace")

    def stop(self, grace: float = 0.3) -> None:
        """Stop every process: SIGTERM, and after `grace` seconds SIGKILL (a process still busy
        with a saga's sleep would otherwise finish it first; nothing here needs that)."""
        for process in self.processes.values():  # all at once: each may wait on keep-alives
            with contextlib.suppress(ProcessLookupError):  # one that had already exited
                os.killpg(process.pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        for process in self.processes.values():
            try:
                process.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        self.processes.clear()
        for engine in self.engines.values():
            engine.dispose()
        drop_databases(self.base_db_url, self.db_urls)
        broker = self.settings.get("BROKER_URL")
        if broker:  # this run's exchanges, queues and accounts
            from messaging.broker_accounts import remove
            from messaging.rabbitmq import purge

            purge(broker, self.namespace, self.routes)
            if self.settings.get("BROKER_ACCOUNTS") != "shared":
                remove(self.namespace, self.routes, node=self.settings.get("BROKER_NODE"))

    # Reading the real tables -------------------------------------------------------

    def row(self, service: str, saga_id: str) -> dict[str, Any] | None:
        """The saga's row in a participant's table, read straight from its database."""
        rows = self.rows_of(service, saga_id)
        return rows[0] if rows else None

    def signed_post(self, service: str, path: str, payload: Any, **headers: str) -> requests.Response:
        """POST to a participant as the orchestrator would: the body signed with the secret."""
        body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        headers = {"Content-Type": "application/json", **headers}
        headers[SIGNATURE_HEADER] = sign(self.secret, "POST", path, body, headers=headers)
        return requests.post(f"{self.urls[service]}{path}", data=body, headers=headers, timeout=10)

    def rows_of(self, service: str, saga_id: str) -> list[dict[str, Any]]:
        """Every row a participant's table holds for the saga (the unique key allows one)."""
        spec = self.declaration.service(service)
        table, column = spec.table, spec.column
        with self.engines[service].connect() as connection:
            rows = connection.execute(
                text(f"SELECT saga_id, {column} AS value, status FROM {table} "
                     "WHERE saga_id = :saga_id"), {"saga_id": saga_id}).mappings().all()
        return [dict(row) for row in rows]

    def row_status(self, service: str, saga_id: str) -> str | None:
        row = self.row(service, saga_id)
        return None if row is None else str(row["status"])

    def count(self, process: str, table: str) -> int:
        with self.engines[process].connect() as connection:
            return int(connection.execute(text(f"SELECT COUNT(*) FROM {table}")).scalar_one())

    def saga_row(self, saga_id: str) -> dict[str, Any] | None:
        with self.engines["orchestrator"].connect() as connection:
            row = connection.execute(text("SELECT * FROM sagas WHERE id = :id"),
                                     {"id": saga_id}).mappings().first()
        return None if row is None else dict(row)

    def events(self, saga_id: str) -> list[tuple[str, str, int, str]]:
        """(step, action, attempt, outcome) of every logged attempt, in order."""
        with self.engines["orchestrator"].connect() as connection:
            rows = connection.execute(
                text("SELECT step, action, attempt, outcome FROM saga_events "
                     "WHERE saga_id = :id ORDER BY id"), {"id": saga_id}).all()
        return [tuple(row) for row in rows]
