"""`make run`: the four processes under supervisord, on SQLite unless told otherwise.

supervisord restarts any process that dies (kill -9 included) within about a second while
the others keep serving, and stops them all on Ctrl-C. This script only prepares its run:
the settings (the environment over `.env`), a random SERVICE_SECRET when none is set (all
four processes get the same one), fault injection on unless FAULTS_ENABLED says otherwise,
with BROKER_URL a broker account per process (BROKER_ACCOUNTS), and the supervisord
configuration in RUN_DIR (var/ by default); then it becomes supervisord.
"""

from __future__ import annotations

import os
import secrets
import shutil
import sys
from pathlib import Path

from common.declaration import load
from common.settings import environment

ROOT = Path(__file__).resolve().parent.parent
# Each program, the variable that holds its port, and its port by default: the orchestrator,
# then every service the saga's declaration names (sagas/signup.py), on its declared port.
PROGRAMS = {"orchestrator": ("ORCHESTRATOR_PORT", 5000),
            **{f"service_{s.name}": (f"{s.env_prefix}PORT", s.port)
               for s in load(environment(ROOT / ".env")).services}}

SUPERVISORD = """\
[supervisord]
nodaemon=true
logfile=/dev/null
logfile_maxbytes=0
pidfile={run_dir}/supervisord.pid

[unix_http_server]
file={run_dir}/supervisor.sock

[supervisorctl]
serverurl=unix://{run_dir}/supervisor.sock

[rpcinterface:supervisor]
supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface
"""

PROGRAM = """
[program:{name}]
command={gunicorn} --config gunicorn.conf.py --bind 127.0.0.1:{port} {name}.wsgi:app
directory={root}
autorestart=true
; Up for a second counts as started; one that keeps failing at start-up (its database not
; there yet, say) is tried again, with growing pauses, a hundred times.
startsecs=1
startretries=100
stopasgroup=true
killasgroup=true
stopwaitsecs=15
stdout_logfile=/dev/stdout
stdout_logfile_maxbytes=0
redirect_stderr=true
{environment}"""


def settings() -> dict[str, str]:
    """The environment the four processes get."""
    env = environment(ROOT / ".env")
    env.setdefault("SERVICE_SECRET", secrets.token_hex(32))
    env.setdefault("FAULTS_ENABLED", "1")
    for program, (variable, default) in PROGRAMS.items():
        port = env.setdefault(variable, str(default))
        if program != "orchestrator":
            env.setdefault(f"{program.upper()}_URL", f"http://127.0.0.1:{port}")
    # The dashboard's origin, wherever the orchestrator's port is.
    env.setdefault("ALLOWED_ORIGINS", ",".join(f"http://{host}:{env['ORCHESTRATOR_PORT']}"
                                               for host in ("127.0.0.1", "localhost")))
    env.setdefault("RUN_DIR", str(ROOT / "var"))
    return env


def broker_accounts(env: dict[str, str]) -> dict[str, str]:
    """With BROKER_URL set: each program's own broker URL, an account made now (fresh passwords
    for the run) that may publish only its service's events; none when BROKER_ACCOUNTS=shared,
    or when rabbitmqctl cannot manage the broker here (then all four share BROKER_URL's)."""
    url = env.get("BROKER_URL")
    if not url or env.get("BROKER_ACCOUNTS", "per_service") == "shared":
        return {}
    from choreography.flow import Flows
    from messaging.broker_accounts import install, rabbitmqctl_available, url_for, vhost_of
    from messaging.rabbitmq import OBSERVER_QUEUE, account_name

    if not rabbitmqctl_available():
        print("make run: rabbitmqctl cannot manage the broker here, so all four processes share the account "
              "of BROKER_URL (the broker cannot tell them apart); BROKER_ACCOUNTS=shared says so quietly",
              file=sys.stderr)
        return {}
    namespace = env.get("BROKER_NAMESPACE", "saga")
    parties = {name: OBSERVER_QUEUE if name == "orchestrator" else name.removeprefix("service_")
               for name in PROGRAMS}
    passwords = {party: secrets.token_hex(16) for party in parties.values()}
    install(namespace, passwords, Flows.load(env).routes, vhost_of(url))
    return {name: url_for(url, account_name(namespace, party), passwords[party])
            for name, party in parties.items()}


def config(env: dict[str, str], broker_urls: dict[str, str] | None = None) -> str:
    gunicorn = shutil.which("gunicorn", path=str(Path(sys.executable).parent)) or "gunicorn"

    def environment(name: str) -> str:
        url = (broker_urls or {}).get(name)
        return f'environment=BROKER_URL="{url.replace("%", "%%")}"\n' if url else ""

    return SUPERVISORD.format(run_dir=env["RUN_DIR"]) + "".join(
        PROGRAM.format(name=name, gunicorn=gunicorn, port=env[variable], root=ROOT,
                       environment=environment(name))
        for name, (variable, _) in PROGRAMS.items())


def main() -> None:
    env = settings()
    run_dir = Path(env["RUN_DIR"])
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / "supervisord.conf"
    path.unlink(missing_ok=True)  # made afresh, readable by us alone: it may hold broker passwords
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w") as written:
        written.write(config(env, broker_accounts(env)))
    supervisord = shutil.which("supervisord", path=str(Path(sys.executable).parent)) or "supervisord"
    os.chdir(ROOT)
    os.execve(supervisord, [supervisord, "--configuration", str(path)], env)


if __name__ == "__main__":
    main()
