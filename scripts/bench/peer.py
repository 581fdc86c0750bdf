"""The system this project replaces, measured in the same run: started on ports 5000-5003 beside
the project's processes (which the bench starts on free ports), its POST /start driven by the
same clients right after each of the project's happy-path rounds, so that both are measured in
the same minute of a machine whose speed drifts.

It is not ours and never part of the project: `--peer-up` is a command that starts it (and
prints its pids), `--peer-down` one that stops it. By default the bench looks for the shared
seed-system script beside this checkout and a fetched copy of its repository (SEED_SYSTEM and
SEED_SOURCE say where); where there is none, it says so and measures the rest.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import requests

from scripts.bench.loops import Result, closed_loop, cpu_seconds, fresh_user

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = Path(os.environ.get("SEED_SYSTEM", ROOT.parent / "shared" / "peers" / "seed-system.sh"))
SOURCE = Path(os.environ.get("SEED_SOURCE", ROOT.parent / ".mirror" / "ritasebastian+saga" / "repo"))


@dataclass(frozen=True)
class Peer:
    up: str  # a shell command that starts it and prints its process ids
    down: str
    start_url: str = "http://127.0.0.1:5000/start"


def default_peer() -> Peer | None:
    """The seed system, if its script and a fetched copy of its repository are here."""
    if not (SCRIPT.is_file() and ((SOURCE / "HEAD").exists() or (SOURCE / ".git").exists())):
        return None
    workdir = Path(tempfile.gettempdir()) / "saga-bench-seed"
    return Peer(up=f"bash {shlex.quote(str(SCRIPT))} up {shlex.quote(str(SOURCE))} {workdir}",
                down=f"bash {shlex.quote(str(SCRIPT))} down {workdir}")


class Running:
    """The peer, started (`with Running(peer) as running:`), measured a round at a time."""

    def __init__(self, peer: Peer) -> None:
        self.peer = peer
        self.pids: list[int] = []

    def __enter__(self) -> Running:
        started = subprocess.run(self.peer.up, shell=True, capture_output=True, text=True,  # noqa: S602
                                 timeout=600)
        if started.returncode != 0:
            raise RuntimeError(f"the peer did not start: {started.stderr[-500:]}")
        self.pids = [int(word) for word in started.stdout.split() if word.isdigit()]
        closed_loop("warm-up", 16, 3, self.saga)
        return self

    def __exit__(self, *_: object) -> None:
        subprocess.run(self.peer.down, shell=True, capture_output=True, timeout=120)  # noqa: S602

    def saga(self, session: requests.Session) -> bool:
        return session.post(self.peer.start_url, json=fresh_user(), timeout=30).status_code == 200

    def measure(self, clients: int, seconds: float) -> tuple[Result, float]:
        """One round of `clients`: the result, and the peer's CPU per saga (ms)."""
        before = cpu_seconds(self.pids)
        result = closed_loop("the system it replaces", clients, seconds, self.saga)
        return result, (cpu_seconds(self.pids) - before) * 1000 / max(1, len(result.latencies))
