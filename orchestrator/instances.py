"""Who an orchestrator process is: a name shared by configuration, made unique by host and process.

ORCHESTRATOR_ID names an orchestrator; several processes may share it (a restart, a second
gunicorn worker, two deployments configured alike). Each process holds leases under an
instance id of its own, `<name>@<host>:<pid>.<nonce>`, so no two ever hold one lease, and a
restarted process can tell its dead predecessor (same name and host, process gone) from a
live twin.
"""

from __future__ import annotations

import os
import secrets
import socket
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Instance:
    name: str
    host: str
    pid: int
    nonce: str

    def __str__(self) -> str:
        return f"{self.name}@{self.host}:{self.pid}.{self.nonce}"


def this_instance(name: str) -> Instance:
    """The instance id of the calling process (call it in the process that drives sagas)."""
    return Instance(name, socket.gethostname()[:40], os.getpid(), secrets.token_hex(3))


def parse_instance(owner: str) -> Instance | None:
    """The parts of an instance id; None for an owner written otherwise (an older log)."""
    name, at, rest = owner.rpartition("@")
    host, colon, process = rest.rpartition(":")
    pid, dot, nonce = process.partition(".")
    if not (at and colon and dot and pid.isdigit()):
        return None
    return Instance(name, host, int(pid), nonce)


def instance_prefix(instance: Instance | None) -> str:
    """What every instance id of the same name on the same host starts with."""
    return "" if instance is None else f"{instance.name}@{instance.host}:"


def process_alive(instance: Instance | None) -> bool:
    """Is this instance's process still running here? (Only asked of instances on our host.)

    Our own pid under another nonce is a predecessor whose pid we were given (a container
    restarts its processes with the same pids): it is gone.
    """
    if instance is None:
        return True  # cannot tell: leave it to its lease
    if instance.pid == os.getpid():
        return False
    try:
        os.kill(instance.pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return not _zombie(instance.pid)


def _zombie(pid: int) -> bool:
    """Killed, but not yet reaped by its parent: dead all the same (Linux's /proc says so)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False  # no /proc here: trust kill()
    return stat.rpartition(")")[2].split()[:1] in (["Z"], ["X"])
