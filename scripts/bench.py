"""`make bench`: the orchestrator's throughput and latency against the bare chain, in one run.

Starts the four processes (SQLite, or MySQL/MariaDB with --database-url), then for each
number of clients drives a closed loop for a fixed time:
  - orchestrated: POST /start (A -> B -> C through the orchestrator, every log write included);
  - bare chain: the same clients calling A, B and C's /invoke directly, no orchestrator;
and prints sagas per second, p50 / p99 / max latency, errors, and the ratio orchestrated / bare.
Then one failure path (B fails, A compensated), the read endpoints, and the happy path and
reads again with --log-size sagas already in the log.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import requests
from sqlalchemy import Engine, insert, make_url, text

from common.db import utcnow
from common.ids import new_saga_id
from orchestrator.store import saga_events, sagas
from scripts.stack import Stack

# The shipped defaults, not the tests' fast ones: this measures what users run.
PRODUCTION = {"CALL_TIMEOUT": "5", "CALL_RETRIES": "2", "COMPENSATION_RETRIES": "5",
              "RETRY_BACKOFF": "0.2", "RETRY_BACKOFF_MAX": "2", "LEASE_SECONDS": "30",
              "RECOVERY_INTERVAL": "2", "COMPENSATION_RETRY_AFTER": "30",
              "FAULT_LATE_MARGIN": "0.5"}
USER = {"username": "bench", "address": "1 Bench Road", "payment": "card-0000"}


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


def closed_loop(name: str, clients: int, seconds: float,
                one: Callable[[requests.Session], bool]) -> Result:
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


def process_ids(stack: Stack) -> dict[str, list[int]]:
    """Every process that does the work: each app's gunicorn master and workers, the database
    server (if it runs here) and this load generator."""
    def children(pid: int) -> list[int]:
        found = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True)
        return [int(p) for p in found.stdout.split()]

    ids = {name: [p.pid, *children(p.pid)] for name, p in stack.processes.items()}
    server = subprocess.run(["pgrep", "-x", "mariadbd|mysqld"], capture_output=True, text=True)
    if stack.base_db_url and server.stdout.split():
        ids["database server"] = [int(p) for p in server.stdout.split()]
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


def measured_loop(stack: Stack, label: str, clients: int, seconds: float,
                  one: Callable[[requests.Session], bool]) -> tuple[Result, dict[str, float]]:
    """`closed_loop`, and how many CPU milliseconds each process spent per completed operation."""
    ids = process_ids(stack)
    before = {process: cpu_seconds(pids) for process, pids in ids.items()}
    result = closed_loop(label, clients, seconds, one)
    done = max(1, len(result.latencies))
    return result, {name: (cpu_seconds(pids) - before[name]) * 1000 / done
                    for name, pids in ids.items()}


def scenarios(stack: Stack) -> dict[str, Callable[[requests.Session], bool]]:
    orchestrator = stack.urls["orchestrator"]
    services = [stack.urls[s] for s in "abc"]
    known: list[str] = []

    def orchestrated(session: requests.Session) -> bool:
        answer = session.post(f"{orchestrator}/start", json=USER, timeout=30)
        if answer.status_code == 200 and len(known) < 1000:
            known.append(answer.json()["saga_id"])
        return answer.status_code == 200

    def bare_chain(session: requests.Session) -> bool:
        body = {"saga_id": new_saga_id(), **USER}  # ids as the orchestrator makes them
        return all(session.post(f"{url}/invoke", json=body, timeout=30).status_code == 200
                   for url in services)

    def one_failure(session: requests.Session) -> bool:
        answer = session.post(f"{orchestrator}/start?fail_b=before_commit", json=USER, timeout=30)
        return answer.status_code == 500 and answer.json()["status"] == "COMPENSATED"

    def list_sagas(session: requests.Session) -> bool:
        return session.get(f"{orchestrator}/sagas?limit=50", timeout=30).status_code == 200

    def one_saga(session: requests.Session) -> bool:
        saga_id = known[int(time.perf_counter() * 1e6) % len(known)]
        return session.get(f"{orchestrator}/sagas/{saga_id}", timeout=30).status_code == 200

    return {"orchestrated": orchestrated, "bare chain": bare_chain, "one failure": one_failure,
            "GET /sagas?limit=50": list_sagas, "GET /sagas/<id>": one_saga}


def fill_log(stack: Stack, total: int, batch: int = 20_000) -> float:
    """Put `total` finished sagas (with three events each) in the log; seconds it took."""
    started = time.perf_counter()
    engine = stack.engines["orchestrator"]
    base = utcnow() - timedelta(days=30)
    inputs, faults = json.dumps(USER), "{}"
    for offset in range(0, total, batch):
        rows, events = [], []
        for i in range(offset, min(total, offset + batch)):
            at = base + timedelta(milliseconds=i)
            saga_id = new_saga_id(at)  # as the orchestrator makes them, from their own time
            rows.append({"id": saga_id, "status": "COMPLETED", "input": inputs, "faults": faults,
                         "current_step": 3, "compensation_rounds": 0, "created_at": at,
                         "updated_at": at})
            events += [{"saga_id": saga_id, "step": step, "action": "invoke", "attempt": 1,
                        "http_status": 200, "outcome": "ok", "latency_ms": 3,
                        "orchestrator": "bench-fill", "at": at} for step in "abc"]
        with engine.begin() as connection:
            connection.execute(insert(sagas), rows)
            connection.execute(insert(saga_events), events)
    if engine.dialect.name != "sqlite":
        with engine.begin() as connection:
            connection.execute(text("ANALYZE TABLE sagas, saga_events"))
    return time.perf_counter() - started


def settle(engine: Engine, most: float = 300) -> float:
    """Wait until InnoDB has written out what the bulk load left dirty (until the count of
    dirty pages stops falling, at most `most` seconds); the seconds it took (0 on SQLite,
    which writes through at each commit).

    Right after a million-row load the server is still flushing it; measured then, the happy
    path would pay for the load, not for the size of the log.
    """
    if engine.dialect.name == "sqlite":
        return 0.0

    def dirty_pages() -> int:
        with engine.connect() as connection:
            return int(connection.execute(text(
                "SHOW GLOBAL STATUS LIKE 'Innodb_buffer_pool_pages_dirty'")).one()[1])

    started = time.perf_counter()
    last = dirty_pages()
    while time.perf_counter() < started + most:
        time.sleep(5)
        now = dirty_pages()
        if now >= last:
            break
        last = now
    return time.perf_counter() - started


def header(title: str) -> list[str]:
    return [f"\n{title}\n", "| run | clients | per second | p50 ms | p99 ms | max ms | errors |",
            "|---|---|---|---|---|---|---|"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--clients", default="1,4,16,64")
    parser.add_argument("--database-url", default=os.environ.get("BENCH_DATABASE_URL") or None,
                        help="a MySQL/MariaDB server URL; SQLite files if not given")
    parser.add_argument("--log-size", type=int, default=1_000_000,
                        help="sagas put in the log before the second round (0 skips it)")
    args = parser.parse_args()
    clients = [int(n) for n in args.clients.split(",")]
    database = make_url(args.database_url).get_backend_name() if args.database_url else "sqlite"
    lines = [f"# make bench — {time.strftime('%Y-%m-%d')}, {os.cpu_count()} cores, "
             f"{platform.python_implementation()} {platform.python_version()}, database: {database}, "
             f"{args.seconds:g} s per run, load generator on the same machine"]
    with tempfile.TemporaryDirectory() as workdir:
        stack = Stack(Path(workdir), args.database_url, settings=PRODUCTION).start()
        try:
            runs = scenarios(stack)
            closed_loop("warm-up", 16, 5, runs["orchestrated"])  # fill pools and caches first
            closed_loop("warm-up", 4, 1, runs["bare chain"])
            lines += header("## Happy path: orchestrated against the bare chain")
            ratios = []
            cpu: dict[str, dict[str, float]] = {}
            for n in clients:
                orchestrated, cpu[f"orchestrated, {n} clients"] = measured_loop(
                    stack, "orchestrated", n, args.seconds, runs["orchestrated"])
                bare, cpu[f"bare chain, {n} clients"] = measured_loop(
                    stack, "bare chain", n, args.seconds, runs["bare chain"])
                ratios.append((n, orchestrated.rate / bare.rate if bare.rate else float("nan")))
                lines += [orchestrated.row(), bare.row()]
                print("\n".join(lines[-2:]), flush=True)
            lines.append("\n| clients | orchestrated / bare |\n|---|---|")
            lines += [f"| {n} | {ratio:.2f} |" for n, ratio in ratios]
            names = list(next(iter(cpu.values())))
            lines += ["\n## Where the CPU goes: milliseconds of CPU per saga (or chain), by process\n",
                      "| run | " + " | ".join(names) + " | total |",
                      "|---" * (len(names) + 2) + "|"]
            lines += [f"| {run} | " + " | ".join(f"{ms[name]:.2f}" for name in names)
                      + f" | {sum(ms.values()):.2f} |" for run, ms in cpu.items()]
            lines += header("## One failure (B fails three times, B and A compensated), and reads")
            for name, n in (("one failure", 16), ("GET /sagas?limit=50", 1), ("GET /sagas?limit=50", 16),
                            ("GET /sagas/<id>", 1), ("GET /sagas/<id>", 16)):
                lines.append(closed_loop(name, n, args.seconds, runs[name]).row())
                print(lines[-1], flush=True)
            if args.log_size:
                # The figure to compare with, measured again just before the fill: this VM's
                # speed drifts over the minutes a run takes.
                before = closed_loop("orchestrated, just before the fill", 16, args.seconds,
                                     runs["orchestrated"])
                print(before.row(), flush=True)
                took = fill_log(stack, args.log_size)
                flushed = settle(stack.engines["orchestrator"])
                with stack.engines["orchestrator"].connect() as connection:
                    total = connection.execute(text("SELECT COUNT(*) FROM sagas")).scalar_one()
                lines += header(f"## With {total:,} sagas in the log (filled in {took:.0f} s, "
                                f"written out by the server {flushed:.0f} s later)")
                after = closed_loop("orchestrated", 16, args.seconds, runs["orchestrated"])
                lines += [before.row(), after.row()]
                print(lines[-1], flush=True)
                for name, n in (("GET /sagas?limit=50", 1), ("GET /sagas?limit=50", 16),
                                ("GET /sagas/<id>", 1), ("GET /sagas/<id>", 16)):
                    lines.append(closed_loop(name, n, args.seconds, runs[name]).row())
                    print(lines[-1], flush=True)
                lines.append(f"\nHappy path at 16 clients, with the big log / just before the fill: "
                             f"{after.rate / before.rate:.2f}")
        finally:
            stack.stop()
    print("\n".join(lines))


if __name__ == "__main__":
    main()
