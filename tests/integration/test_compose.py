"""docker-compose.yml runs: its app commands, environments and health checks, run here.

No Docker engine runs on this machine, so this test does what compose would: it loads
sql/ into a fresh database per process (on MySQL/MariaDB with TEST_DATABASE_URL),
starts each app service's own `command` with its own `environment` (host names and
ports mapped to free loopback ports), runs its own health check, and drives sagas.
"""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml
from sqlalchemy import create_engine, make_url, text
from tenacity import Retrying, stop_after_delay, wait_fixed

from scripts.schema import SQL
from scripts.stack import ROOT, free_port
from tests.support import TEST_DATABASE_URL

COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
APPS = ("service_a", "service_b", "service_c", "orchestrator")


def test_compose_shape() -> None:
    services = COMPOSE["services"]
    assert set(services) == {"mysql", *APPS}
    assert services["mysql"]["image"].startswith("mysql:8")
    assert "./sql:/docker-entrypoint-initdb.d:ro" in services["mysql"]["volumes"]
    for name in APPS:
        depends = services[name]["depends_on"]
        assert all(d["condition"] == "service_healthy" for d in depends.values()), name
        assert "healthcheck" in services[name], name
    assert set(services["orchestrator"]["depends_on"]) == {"mysql", "service_a", "service_b",
                                                            "service_c"}


@pytest.fixture
def compose_here(tmp_path: Path) -> Iterator[dict[str, Any]]:
    """The compose app services as local processes: {name: {"url", "db", "process"}}."""
    tag = uuid.uuid4().hex[:8]
    ports = {name: free_port() for name in APPS}
    hosts = {f"{name}:{port}": f"127.0.0.1:{ports[name]}"
             for name, port in (("service_a", 5001), ("service_b", 5002), ("service_c", 5003),
                                ("orchestrator", 5000))}
    databases: dict[str, str] = {}
    admin = create_engine(TEST_DATABASE_URL, isolation_level="AUTOCOMMIT") if TEST_DATABASE_URL else None

    def database_url(compose_url: str) -> str:
        database = make_url(compose_url).database
        assert database
        if admin is None:
            databases[database] = f"sqlite:///{tmp_path / database}.db"
        else:
            databases[database] = make_url(TEST_DATABASE_URL).set(
                database=f"saga_compose_{tag}_{database}").render_as_string(hide_password=False)
        return databases[database]

    running: dict[str, Any] = {}
    try:
        for name in APPS:
            service = COMPOSE["services"][name]
            # The image has gunicorn on its PATH; here it is in this interpreter's environment.
            env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
            for key, value in service["environment"].items():
                value = str(value)
                if value.startswith("mysql+pymysql://"):
                    value = database_url(value)
                for compose_host, local in hosts.items():
                    value = value.replace(f"http://{compose_host}", f"http://{local}")
                env[key] = value
            if admin is not None:  # as MySQL's entrypoint would: run sql/ into an empty server
                load_sql(admin, tag, name)
            port = ports[name]
            command = shlex.split(service["command"].replace(f"0.0.0.0:{port_of(name)}", f"127.0.0.1:{port}"))
            log = open(tmp_path / f"{name}.log", "ab")  # noqa: SIM115
            with log:
                process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log,
                                           stderr=subprocess.STDOUT, start_new_session=True)
            running[name] = {"url": f"http://127.0.0.1:{port}", "process": process,
                             "health": service["healthcheck"]["test"], "port": port}
        yield {"apps": running, "databases": databases}
    finally:
        for app in running.values():
            os.killpg(app["process"].pid, signal.SIGTERM)
        for app in running.values():
            app["process"].wait(timeout=15)
        if admin is not None:
            with admin.connect() as connection:
                for url in databases.values():
                    connection.execute(text(f"DROP DATABASE IF EXISTS `{make_url(url).database}`"))
            admin.dispose()


def port_of(name: str) -> int:
    return {"orchestrator": 5000, "service_a": 5001, "service_b": 5002, "service_c": 5003}[name]


def load_sql(admin: Any, tag: str, name: str) -> None:
    files = {"orchestrator": "10_orchestrator.sql", "service_a": "20_service_a.sql",
             "service_b": "30_service_b.sql", "service_c": "40_service_c.sql"}
    ddl = (SQL / files[name]).read_text().replace(f"`{name}`", f"`saga_compose_{tag}_{name}`")
    with admin.connect() as connection:
        for statement in re.sub(r"--[^\n]*", "", ddl).split(";"):
            if statement.strip():
                connection.execute(text(statement))


def test_compose_services_start_pass_their_health_checks_and_run_sagas(compose_here: dict[str, Any]) -> None:
    apps = compose_here["apps"]
    for name, app in apps.items():
        check = [part.replace(f"127.0.0.1:{port_of(name)}", f"127.0.0.1:{app['port']}")
                 for part in app["health"][1:]]  # drop "CMD"
        check[0] = sys.executable
        for attempt in Retrying(stop=stop_after_delay(30), wait=wait_fixed(0.2), reraise=True):
            with attempt:
                assert app["process"].poll() is None, f"{name} exited"
                subprocess.run(check, check=True, capture_output=True, timeout=5)
    start = f"{apps['orchestrator']['url']}/start"
    user = {"username": "compose", "address": "1 Compose Way", "payment": "visa"}
    done = requests.post(start, json=user, timeout=60)
    assert (done.status_code, done.json()["status"]) == (200, "COMPLETED"), done.text
    failed = requests.post(f"{start}?fail_c=before_commit", json=user, timeout=60)
    assert (failed.status_code, failed.json()["status"]) == (500, "COMPENSATED"), failed.text
    expected = {"service_a": ("table_a", "COMPENSATED"), "service_b": ("table_b", "COMPENSATED"),
                "service_c": ("table_c", "CANCELLED")}
    for database, (table, status) in expected.items():
        engine = create_engine(compose_here["databases"][database])
        with engine.connect() as connection:
            rows = dict(connection.execute(text(f"SELECT saga_id, status FROM {table}")).all())
        engine.dispose()
        assert rows[done.json()["saga_id"]] == "APPLIED", database
        assert rows[failed.json()["saga_id"]] == status, database
