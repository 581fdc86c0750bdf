"""Closed loops of clients, what each client sends, and what each process spent in CPU while
they ran."""

from __future__ import annotations

import os
import subprocess
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import requests

from scripts.stack import Stack

One = Callable[[requests.Session], bool]  # one saga (or call), done by one client; True if it went as meant


def fresh_user() -> dict[str, str]:
    """A sign-up's input under a fresh tag: service A refuses a username that a live account of
    another saga holds, so every saga signs up a user of its own."""
    tag = uuid.uuid4().hex[:12]
    return {"username": f"bench-{tag}", "address": f"{tag} Bench Road", "payment": f"card-{tag}"}


@dataclass
class Result:
    name: str
    clients: int
    seconds: float
    latencies: list[float]
    errors: int

    @property
    def rate(self) -> float:
        return len(self.latencies) / self.seconds

    def percentile(self, p: float) -> float:
        if not self.latencies:
            return float("nan")
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))] * 1000

    def row(self) -> str:
        return (f"| {self.name} | {self.clients} | {self.rate:.0f} | {self.percentile(50):.1f} | "
                f"{self.percentile(99):.1f} | {max(self.latencies, default=0) * 1000:.0f} | "
                f"{self.errors} |")


def closed_loop(name: str, clients: int, seconds: float, one: One) -> Result:
    """`clients` threads each run `one` back to back for `seconds`; a False or raise is an error."""
    latencies: list[float] = []
    errors = 0
    guard = threading.Lock()
    start_line = threading.Barrier(clients + 1)
    stop_at = [0.0]

    def client() -> None:
        nonlocal errors
        session = requests.Session()
        start_line.wait()
        mine, bad = [], 0
        while (now := time.perf_counter()) < stop_at[0]:
            try:
                ok = one(session)
            except requests.RequestException:
                ok = False
            if ok:
                mine.append(time.perf_counter() - now)
            else:
                bad += 1
        with guard:
            latencies.extend(mine)
            errors += bad

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for thread in threads:
        thread.start()
    stop_at[0] = time.perf_counter() + seconds
    start_line.wait()
    for thread in threads:
        thread.join()
    return Result(name, clients, seconds, latencies, errors)


def pids_of(command: str) -> list[int]:
    found = subprocess.run(["pgrep", "-x", command], capture_output=True, text=True)
    return [int(p) for p in found.stdout.split()]


def process_ids(stack: Stack) -> dict[str, list[int]]:
    """Every process that does the work: each app's gunicorn master and workers, the database
    server and the broker (when they run here and the stack uses them) and this load generator."""
    def children(pid: int) -> list[int]:
        found = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True)
        return [int(p) for p in found.stdout.split()]

    ids = {name: [p.pid, *children(p.pid)] for name, p in stack.processes.items()}
    if stack.base_db_url and (server := pids_of("mariadbd") or pids_of("mysqld")):
        ids["database server"] = server
    if stack.settings.get("BROKER_URL") and (broker := pids_of("beam.smp")):
        ids["broker"] = broker
    ids["load generator"] = [os.getpid()]
    return ids


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU time of these processes so far, from /proc."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except FileNotFoundError:
            continue
        total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def measured(ids: dict[str, list[int]], name: str, clients: int, seconds: float,
             one: One) -> tuple[Result, dict[str, float]]:
    """`closed_loop`, and how many CPU milliseconds each process spent per completed operation."""
    before = {process: cpu_seconds(pids) for process, pids in ids.items()}
    result = closed_loop(name, clients, seconds, one)
    done = max(1, len(result.latencies))
    return result, {process: (cpu_seconds(pids) - before[process]) * 1000 / done
                    for process, pids in ids.items()}


def rss_mib(pids: list[int]) -> float:
    """Resident memory of these processes together, MiB, from /proc."""
    total = 0
    for pid in pids:
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except FileNotFoundError:
            continue
        total += next((int(line.split()[1]) for line in status.splitlines()
                       if line.startswith("VmRSS:")), 0)
    return total / 1024
