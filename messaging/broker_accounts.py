"""Broker accounts: each service publishes on RabbitMQ as its own user, and only its own events.

One account per party (`<namespace>-a`, `-b`, `-c`, `-observer`), made together with the
namespace's exchanges, queues and bindings (by an administrator, before any service connects),
with RabbitMQ permissions that let it declare and bind the namespace's exchanges and queues,
consume its own queue only, and, through topic permissions on the events exchange, publish only
the event types it owns (`Routes.sources`, from the flow); the observer publishes none. The broker
checks each message's `user_id` against the connection's user, so a consumer knows which
account published what it got.

`definitions` is what `rabbitmqctl import_definitions` takes (one call creates or updates every
account); `make run`, the tests and the bench install it here, and compose's broker runs
`ops/rabbitmq/accounts.sh`, written from the same accounts (`make sql` writes it).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, unquote, urlsplit, urlunsplit

from messaging.rabbitmq import OBSERVER_QUEUE, Topology, account_name
from messaging.routes import Routes


def parties(routes: Routes) -> tuple[str, ...]:
    """Every party with an account: each service, and the observer."""
    return (*routes.services, OBSERVER_QUEUE)


@dataclass(frozen=True)
class Account:
    """One party's broker user and what it may do in the namespace."""

    party: str
    user: str
    configure: str
    write: str
    read: str
    publishes: tuple[str, ...]  # the event types it may publish (topic permission on the exchange)

    @property
    def topic_write(self) -> str:
        return f"^({'|'.join(map(re.escape, self.publishes))})$" if self.publishes else "^$"


def accounts(namespace: str, routes: Routes) -> list[Account]:
    """Every party's account under `namespace`."""
    topology = Topology(namespace, routes)
    everything = f"^{re.escape(namespace)}\\."
    found = []
    for party in parties(routes):
        own = topology.dead_queue if party == OBSERVER_QUEUE else topology.queue(f"service_{party}")
        readable = [topology.exchange, topology.dead_exchange, own]
        if party == OBSERVER_QUEUE:
            readable.append(topology.queue(OBSERVER_QUEUE))
        found.append(Account(
            party, account_name(namespace, party),
            configure=everything,  # every process declares the whole topology (idempotent)
            write=everything,  # binding a queue writes to it; publishing into a queue needs an exchange
            read=f"^({'|'.join(map(re.escape, readable))})$",  # the exchanges to bind, its own queue(s)
            publishes=routes.publishes(party)))
    return found


def definitions(namespace: str, passwords: dict[str, str], routes: Routes,
                vhost: str = "/") -> dict[str, Any]:
    """The accounts as RabbitMQ definitions (`rabbitmqctl import_definitions`), with the passwords
    given per party; no tags: none of them is an administrator."""
    found = accounts(namespace, routes)
    topology = Topology(namespace, routes)
    return {
        **topology.definitions(vhost),
        "users": [{"name": a.user, "password": passwords[a.party], "tags": ""} for a in found],
        "permissions": [{"user": a.user, "vhost": vhost, "configure": a.configure, "write": a.write,
                         "read": a.read} for a in found],
        "topic_permissions": [{"user": a.user, "vhost": vhost, "exchange": topology.exchange,
                               "write": a.topic_write, "read": ".*"} for a in found],
    }


def rabbitmqctl_available() -> bool:
    """Can this machine manage its broker (rabbitmqctl on the PATH, and allowed to talk to it)?"""
    if shutil.which("rabbitmqctl") is None:
        return False
    listed = subprocess.run(["rabbitmqctl", "-q", "list_users"], capture_output=True, timeout=60)
    return listed.returncode == 0


def install(namespace: str, passwords: dict[str, str], routes: Routes, vhost: str = "/",
            node: str | None = None) -> None:
    """Create (or update) every account on the local broker, in one rabbitmqctl call."""
    document = json.dumps(definitions(namespace, passwords, routes, vhost))
    subprocess.run([*_rabbitmqctl(node), "import_definitions"], input=document, text=True,  # from stdin
                   check=True, capture_output=True, timeout=120)


def remove(namespace: str, routes: Routes, node: str | None = None) -> None:
    """Delete every account of `namespace` from the local broker (the tests' own, say)."""
    for account in accounts(namespace, routes):
        subprocess.run([*_rabbitmqctl(node), "delete_user", account.user], capture_output=True, timeout=60)


def _rabbitmqctl(node: str | None) -> list[str]:
    return ["rabbitmqctl", "-q", *(["-n", node] if node else [])]


def url_for(base_url: str, user: str, password: str) -> str:
    """`base_url` (host, port, vhost) with `user`'s credentials instead of its own."""
    parts = urlsplit(base_url)
    host = parts.hostname or "localhost"
    netloc = f"{quote(user, safe='')}:{quote(password, safe='')}@{host}"
    if parts.port:
        netloc += f":{parts.port}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def vhost_of(url: str) -> str:
    """The virtual host an amqp URL names ("/" when it names none)."""
    path = urlsplit(url).path
    return unquote(path[1:]) if len(path) > 1 else "/"


ACCOUNTS_SCRIPT_HEAD = """\
#!/bin/sh
# Generated by `make sql` from messaging/broker_accounts.py; a test fails if it is not current.
# Compose's broker runs this once it is up: one account per service (and the observer), each
# allowed to publish only the events it owns, with the passwords from .env; then the guest
# account, an administrator, is deleted (DELETE_GUEST=0 keeps it). BROKER_NAMESPACE (default
# saga) prefixes the users, exchanges and queues.
set -eu
ns="${BROKER_NAMESPACE:-saga}"
for variable in @VARIABLES@; do
    eval "value=\\${$variable:-}"
    case "$value" in
        ""|change-me) echo "set $variable in .env to a secret of your own (make up does)" >&2; exit 1 ;;
    esac
    if ! printf '%s' "$value" | grep -Eq '^[A-Za-z0-9_.~-]{16,}$'; then
        echo "$variable: use 16 or more of A-Z a-z 0-9 _ . ~ - (it goes into URLs)" >&2; exit 1
    fi
done
"""


def accounts_script(routes: Routes) -> str:
    """The shell script compose's broker runs (ops/rabbitmq/accounts.sh), for any namespace."""
    named = parties(routes)
    tokens = {"@NS@": "${ns}", **{f"@{p.upper()}@": f"${{RABBITMQ_{p.upper()}_PASSWORD}}" for p in named}}
    document = json.dumps(definitions("@NS@", {p: f"@{p.upper()}@" for p in named}, routes), indent=1)
    document = document.replace("\\", "\\\\")  # a here-document takes a backslash as an escape
    for token, expansion in tokens.items():
        document = document.replace(token, expansion)
    variables = " ".join(f"RABBITMQ_{p.upper()}_PASSWORD" for p in named)
    head = ACCOUNTS_SCRIPT_HEAD.replace("@VARIABLES@", variables)
    return (head + f"rabbitmqctl -q import_definitions <<JSON\n{document}\nJSON\n"
            'if [ "${DELETE_GUEST:-1}" = 1 ]; then rabbitmqctl -q delete_user guest 2>/dev/null || true; fi\n'
            'echo "broker accounts for $ns: ready"\n')
