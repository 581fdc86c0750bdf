"""docker-compose.yml runs: its app commands, environments, users and health checks, run here.

No Docker engine runs on this machine, so this test does what compose would: it resolves
the file with `docker-compose config` (its own interpolation of .env), loads sql/ into a
fresh database per process and creates the users sql/90_users.sh creates (on MySQL/MariaDB
with TEST_DATABASE_URL), starts each app service's own `command` with its own `environment`
(host names and ports mapped to free loopback ports), runs its own health check, and drives
sagas.
"""

from __future__ import annotations

import os
import re
import secrets
import shlex
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import requests
import yaml
from sqlalchemy import create_engine, make_url, text
from sqlalchemy.exc import OperationalError, ProgrammingError
from tenacity import Retrying, stop_after_delay, wait_fixed

from choreography.flow import Flows
from common.settings import shared_settings
from messaging.broker_accounts import remove, url_for
from messaging.rabbitmq import purge
from scripts.schema import SQL, password_variable, users_sql
from scripts.stack import ROOT, free_port
from tests.support.people import fresh_user
from tests.support.stacks import BROKER_URL, TEST_DATABASE_URL

APPS = ("service_a", "service_b", "service_c", "orchestrator")
PORTS = {"orchestrator": 5000, "service_a": 5001, "service_b": 5002, "service_c": 5003}


def resolved(env_file: Path) -> dict[str, Any]:
    """docker-compose.yml as compose itself reads it with `env_file` as .env."""
    out = subprocess.run(["docker-compose", "--file", str(ROOT / "docker-compose.yml"),
                          "--env-file", str(env_file), "config"],
                         check=True, capture_output=True, text=True, timeout=60).stdout
    return yaml.safe_load(out)  # type: ignore[no-any-return]


@pytest.fixture
def env_file(tmp_path: Path) -> Path:
    """A .env as `make up` writes it: .env.example with a fresh secret for each `change-me`."""
    path = tmp_path / ".env"
    lines = [f"{line.partition('=')[0]}={secrets.token_hex(16)}" if line.endswith("=change-me") else line
             for line in (ROOT / ".env.example").read_text().splitlines()]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_compose_shape_and_least_privilege(env_file: Path) -> None:
    raw = (ROOT / "docker-compose.yml").read_text()
    assert "change-me" not in raw and not re.search(r"PASSWORD:\s*\w", raw), "no password in the file"
    services = resolved(env_file)["services"]
    observability = {"prometheus", "grafana", "jaeger"}
    assert set(services) == {"mysql", "rabbitmq", *APPS, *observability}
    assert all(services[name]["profiles"] == ["observability"] for name in observability)
    assert all("profiles" not in services[name] for name in ("mysql", "rabbitmq", *APPS)), \
        "docker compose up without a profile runs the system, nothing more"
    broker = services["rabbitmq"]
    assert "RABBITMQ_DEFAULT_USER" not in broker["environment"], "no administrator account for the apps"
    assert broker["entrypoint"] == ["/bin/sh", "/opt/saga/start.sh"]
    assert any(str(v).endswith("/ops/rabbitmq:/opt/saga:ro") for v in broker["volumes"])
    assert "accounts-ready" in broker["healthcheck"]["test"][1], "healthy once the accounts exist"
    assert services["mysql"]["image"].startswith("mysql:8")
    assert any(str(v).endswith("/sql:/docker-entrypoint-initdb.d:ro") for v in services["mysql"]["volumes"])
    assert "--password" not in " ".join(services["mysql"]["healthcheck"]["test"]), \
        "a password in a health check's command line is visible to anyone who lists processes"
    for name in APPS:
        depends = services[name]["depends_on"]
        assert all(d["condition"] == "service_healthy" for d in depends.values()), name
        assert {"mysql", "rabbitmq"} <= set(depends), f"{name} waits for its database and the broker"
        assert "healthcheck" in services[name], name
        assert services[name]["environment"]["SERVICE_SECRET"], name
        party = "observer" if name == "orchestrator" else name.removeprefix("service_")
        assert services[name]["environment"]["BROKER_URL"].startswith(f"amqp://saga-{party}:"), \
            f"{name} publishes as its own broker account"
        if name != "orchestrator":  # reached under a host name that takes no "_"
            assert services[name]["networks"]["default"]["aliases"] == [name.replace("_", "-")]
            assert services["orchestrator"]["environment"][f"{name.upper()}_URL"] == \
                f"http://{name.replace('_', '-')}:{PORTS[name]}"
    assert set(services["orchestrator"]["depends_on"]) == {"mysql", "rabbitmq", "service_a", "service_b",
                                                           "service_c"}
    published = {name: service.get("ports", []) for name, service in services.items()
                 if name not in observability}
    assert {name for name, ports in published.items() if ports} == {"orchestrator"}, \
        "only the orchestrator is published; the participants are reached on the compose network"
    for name in observability:  # the observability tools' UIs on the loopback interface only
        assert all(str(p).startswith("127.0.0.1:") for p in services[name].get("ports", [])), name
    assert [str(p).removesuffix("/tcp") for p in published["orchestrator"]] == ["127.0.0.1:5000:5000"], \
        "published on the loopback interface only"
    users = {name: make_url(services[name]["environment"][key]).username
             for name, key in (("orchestrator", "ORCHESTRATOR_DATABASE_URL"),
                               ("service_a", "SERVICE_A_DATABASE_URL"),
                               ("service_b", "SERVICE_B_DATABASE_URL"),
                               ("service_c", "SERVICE_C_DATABASE_URL"))}
    assert users == {name: name for name in APPS}, "one database user per process"
    # Every process's pool at its fullest (DB_POOL_SIZE, and half as many more under load) fits
    # in the server's connections, with room for a person at the mysql prompt.
    pool = shared_settings({**services["orchestrator"]["environment"]})["DB_POOL_SIZE"]
    most = dict(arg.lstrip("-").split("=") for arg in services["mysql"]["command"])["max-connections"]
    assert len(APPS) * (pool + pool // 2) + 10 <= int(most)


@pytest.fixture
def compose_here(tmp_path: Path, env_file: Path) -> Iterator[dict[str, Any]]:
    """The compose app services as local processes: {name: {"url", "db", "process"}}."""
    services = resolved(env_file)["services"]
    tag = uuid.uuid4().hex[:8]
    ports = {name: free_port() for name in APPS}
    hosts = {f"{name.replace('_', '-')}:{port}": f"127.0.0.1:{ports[name]}" for name, port in PORTS.items()}
    namespace = f"saga-compose-{tag}"
    passwords = dict(line.split("=", 1) for line in env_file.read_text().splitlines()
                     if "=" in line and not line.startswith("#"))
    # The broker's accounts, as compose's broker makes them: its own script, with .env's
    # passwords, here in a namespace of this test's (and the machine's guest kept).
    made = subprocess.run(["sh", str(ROOT / "ops" / "rabbitmq" / "accounts.sh")], capture_output=True,
                          text=True, timeout=60,
                          env={**os.environ, **passwords, "BROKER_NAMESPACE": namespace, "DELETE_GUEST": "0"})
    assert made.returncode == 0, made.stderr
    databases: dict[str, str] = {}
    admin = create_engine(TEST_DATABASE_URL, isolation_level="AUTOCOMMIT") if TEST_DATABASE_URL else None
    if admin is not None:  # as MySQL's entrypoint would: sql/ into an empty server, then the users
        for name in APPS:
            load_sql(admin, tag, name)
        sql = users_sql({f"{name}_{tag}": f"saga_compose_{tag}_{name}" for name in APPS},
                        {f"{name}_{tag}": passwords[password_variable(name)] for name in APPS})
        with admin.connect() as connection:
            for statement in sql.strip().splitlines():
                connection.execute(text(statement))

    def database_url(compose_url: str) -> str:
        url = make_url(compose_url)
        assert url.database
        if admin is None:
            databases[url.database] = f"sqlite:///{tmp_path / url.database}.db"
        else:  # the compose user and password, on this server, in this test's databases
            databases[url.database] = make_url(TEST_DATABASE_URL).set(
                username=f"{url.username}_{tag}", password=url.password,
                database=f"saga_compose_{tag}_{url.database}").render_as_string(hide_password=False)
        return databases[url.database]

    running: dict[str, Any] = {}
    try:
        for name in APPS:
            service = services[name]
            # The image has gunicorn on its PATH; here it is in this interpreter's environment.
            env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
            for key, value in service["environment"].items():
                value = str(value)
                if value.startswith("mysql+pymysql://"):
                    value = database_url(value)
                if key == "BROKER_URL":  # this machine's RabbitMQ: the account compose's script made
                    account = urlsplit(value)
                    party = str(account.username).removeprefix("saga-")
                    value = url_for(BROKER_URL, f"{namespace}-{party}", str(account.password))
                    env["BROKER_NAMESPACE"] = namespace
                for compose_host, local in hosts.items():
                    value = value.replace(f"http://{compose_host}", f"http://{local}")
                env[key] = value
            port = ports[name]
            command = service["command"]
            command = shlex.split(command if isinstance(command, str) else shlex.join(command))
            command = [part.replace(f"0.0.0.0:{PORTS[name]}", f"127.0.0.1:{port}") for part in command]
            log = open(tmp_path / f"{name}.log", "ab")  # noqa: SIM115
            with log:
                process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log,
                                           stderr=subprocess.STDOUT, start_new_session=True)
            running[name] = {"url": f"http://127.0.0.1:{port}", "process": process,
                             "health": service["healthcheck"]["test"], "port": port}
        yield {"apps": running, "databases": databases, "tag": tag}
    finally:
        for app in running.values():
            os.killpg(app["process"].pid, signal.SIGTERM)
        for app in running.values():
            app["process"].wait(timeout=15)
        purge(BROKER_URL, namespace, Flows.load({}).routes)
        remove(namespace, Flows.load({}).routes)
        if admin is not None:
            with admin.connect() as connection:
                for name in APPS:
                    connection.execute(text(f"DROP DATABASE IF EXISTS `saga_compose_{tag}_{name}`"))
                    connection.execute(text(f"DROP USER IF EXISTS '{name}_{tag}'@'%'"))
            admin.dispose()


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
        check = [part.replace(f"127.0.0.1:{PORTS[name]}", f"127.0.0.1:{app['port']}")
                 for part in app["health"][1:]]  # drop "CMD"
        check[0] = sys.executable
        for attempt in Retrying(stop=stop_after_delay(30), wait=wait_fixed(0.2), reraise=True):
            with attempt:
                assert app["process"].poll() is None, f"{name} exited"
                subprocess.run(check, check=True, capture_output=True, timeout=5)
    start = f"{apps['orchestrator']['url']}/start"
    done = requests.post(start, json=fresh_user(), timeout=60)
    assert (done.status_code, done.json()["status"]) == (200, "COMPLETED"), done.text
    failed = requests.post(f"{start}?fail_c=before_commit", json=fresh_user(), timeout=60)
    assert (failed.status_code, failed.json()["status"]) == (500, "COMPENSATED"), failed.text
    signup = requests.post(f"{apps['service_a']['url']}/signups", json=fresh_user(), timeout=10)
    assert signup.status_code == 202, signup.text
    observed = requests.get(f"{apps['orchestrator']['url']}/choreography/sagas/{signup.json()['saga_id']}",
                            params={"wait": 20}, timeout=30).json()
    assert observed["status"] == "COMPLETED", "the choreographed saga, over the broker"
    expected = {"service_a": ("table_a", "COMPENSATED"), "service_b": ("table_b", "COMPENSATED"),
                "service_c": ("table_c", "CANCELLED")}
    for database, (table, status) in expected.items():
        engine = create_engine(compose_here["databases"][database])
        with engine.connect() as connection:
            rows = dict(connection.execute(text(f"SELECT saga_id, status FROM {table}")).all())
        engine.dispose()
        assert rows[done.json()["saga_id"]] == "APPLIED", database
        assert rows[failed.json()["saga_id"]] == status, database


@pytest.mark.skipif(not TEST_DATABASE_URL, reason="database users: MySQL/MariaDB only")
def test_each_process_user_reaches_its_own_database_only(compose_here: dict[str, Any]) -> None:
    tag, databases = compose_here["tag"], compose_here["databases"]
    user = fresh_user()
    for attempt in Retrying(stop=stop_after_delay(30), wait=wait_fixed(0.2), reraise=True):
        with attempt:  # once it is up: the orchestrator, as its own user, logs a saga
            done = requests.post(f"{compose_here['apps']['orchestrator']['url']}/start", json=user,
                                 timeout=30)
            assert done.status_code == 200, done.text
    orchestrator = create_engine(databases["orchestrator"])
    try:
        with orchestrator.connect() as connection:
            logged = connection.execute(text("SELECT id FROM sagas")).scalars().all()
            assert logged == [done.json()["saga_id"]], "its own user reads and writes its own database"
            with pytest.raises((OperationalError, ProgrammingError), match="denied"):
                connection.execute(text(f"SELECT * FROM `saga_compose_{tag}_service_a`.table_a"))
    finally:
        orchestrator.dispose()
    service_a = create_engine(databases["service_a"])
    try:
        with service_a.connect() as connection, pytest.raises((OperationalError, ProgrammingError),
                                                               match="denied"):
            connection.execute(text(f"UPDATE `saga_compose_{tag}_orchestrator`.sagas SET status = 'X'"))
    finally:
        service_a.dispose()


@pytest.mark.parametrize("script", ["ops/rabbitmq/accounts.sh", "sql/90_users.sh"])
def test_the_examples_change_me_passwords_are_refused(script: str, tmp_path: Path) -> None:
    """A .env copied from .env.example as it is: the broker's and MySQL's first start fail, and
    say why (a `mysql` or `rabbitmqctl` that would run is never reached)."""
    example = dict(line.split("=", 1) for line in (ROOT / ".env.example").read_text().splitlines()
                   if "=" in line and not line.startswith("#"))
    fake = tmp_path / "bin"
    fake.mkdir()
    for tool in ("mysql", "rabbitmqctl"):
        (fake / tool).write_text("#!/bin/sh\necho reached >&2\nexit 0\n")
        (fake / tool).chmod(0o755)
    ran = subprocess.run(["sh", str(ROOT / script)], capture_output=True, text=True, timeout=60,
                         env={"PATH": f"{fake}:{os.environ['PATH']}", **example})
    assert ran.returncode == 1 and "change-me" not in ran.stdout
    assert "in .env to a secret of your own" in ran.stderr and "reached" not in ran.stderr, ran.stderr


def test_make_up_writes_env_readable_by_its_owner_only(tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    from scripts import write_env

    (tmp_path / ".env.example").write_text((ROOT / ".env.example").read_text())
    monkeypatch.setattr(write_env, "ROOT", tmp_path)
    old = os.umask(0)  # even with nothing masked, the file is made 0600 from the start
    try:
        assert write_env.main() == 0
    finally:
        os.umask(old)
    written = tmp_path / ".env"
    assert written.stat().st_mode & 0o777 == 0o600
    assert not any(line.endswith("=change-me") for line in written.read_text().splitlines())
    assert ".env" in (ROOT / ".gitignore").read_text().splitlines(), "never committed"


def test_the_image_holds_every_package_the_apps_import() -> None:
    copied = {line.split()[1] for line in (ROOT / "Dockerfile").read_text().splitlines()
              if line.startswith("COPY ")}
    packages = {path.parent.name for path in ROOT.glob("*/__init__.py")} - {"tests", "scripts"}
    assert packages <= copied, f"not in the image: {packages - copied}"
