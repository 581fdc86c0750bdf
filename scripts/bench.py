"""`make bench`: both saga models' throughput and latency against the bare chain, on SQLite and
on MySQL/MariaDB, in one run.

For each database (SQLite files, then the server at --database-url) it starts the four
processes with the shipped settings, and for each number of clients drives a closed loop
for a fixed time:
  - orchestrated: POST /start (A -> B -> C through the orchestrator, every log write included);
  - bare chain: the same clients calling A, B and C's /invoke directly (signed), no orchestrator;
  - choreographed: POST /signups at A, then waiting until the observer has seen it COMPLETED,
    over the embedded transport and (with a second start) over RabbitMQ;
and prints sagas per second, p50 / p99 / max latency, errors, the ratio orchestrated / bare,
the CPU each process spends per saga, one failure path (B fails, A compensated), the read
endpoints, (--log-size) the happy path and reads again with that many sagas in the log, and
(--soak-minutes) each process's memory over a long mixed run.
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
from common.signing import SIGNATURE_HEADER, sign
from orchestrator.store import saga_events, sagas
from scripts.stack import Stack

# The shipped defaults, not the tests' fast ones: this measures what users run (with fault
# injection on, as make run has it, for the failure path).
PRODUCTION = {"CALL_TIMEOUT": "5", "CALL_RETRIES": "2", "COMPENSATION_RETRIES": "5",
              "RETRY_BACKOFF": "0.2", "RETRY_BACKOFF_MAX": "2", "RETRY_JITTER": "0.1",
              "LEASE_SECONDS": "30", "RECOVERY_INTERVAL": "2", "COMPENSATION_RETRY_AFTER": "30",
              "FAULT_LATE_MARGIN": "0.5", "FAULTS_ENABLED": "1", "CHOREOGRAPHY_DEADLINE": "15",
              "CHOREOGRAPHY_POLL": "0.5", "FAULT_SLEEP_SLOTS": "8", "GUNICORN_THREADS": "32"}
MYSQL = "mysql+pymysql://root@127.0.0.1:3306/test"
BROKER = "amqp://guest:guest@127.0.0.1:5672/%2F"
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


def memory_soak(stack: Stack, minutes: float, runs: dict[str, Callable[[requests.Session], bool]]
                ) -> list[str]:
    """16 clients for `minutes`: mostly orchestrated sagas, some choreographed, some failing.
    The RSS of each process after the first minute (pools, caches and imports settled) and at
    the end: nothing held in memory may grow with the number of sagas."""
    mix = [runs["orchestrated"]] * 3 + [runs["choreographed"], runs["one failure"]]
    turn = iter(range(10**12))

    def one(session: requests.Session) -> bool:
        return mix[next(turn) % len(mix)](session)

    ids = {name: pids for name, pids in process_ids(stack).items() if name != "database server"}
    closed_loop("soak, first minute", 16, min(60, minutes * 60), one)
    first = {name: rss_mib(pids) for name, pids in ids.items()}
    sagas, rest = 0, max(0.0, minutes * 60 - 60)
    while rest > 0:
        chunk = closed_loop("soak", 16, min(60, rest), one)
        sagas += len(chunk.latencies) + chunk.errors
        rest -= chunk.seconds
    lines = [f"\n#### Memory over a {minutes:g}-minute soak (16 clients; {sagas:,} sagas after the "
             "first minute: orchestrated, choreographed and failing)\n",
             "| process | RSS after 1 min, MiB | at the end, MiB | growth | flat within 10 % |",
             "|---|---|---|---|---|"]
    for name, pids in ids.items():
        end = rss_mib(pids)
        growth = end / first[name] - 1 if first[name] else float("nan")
        lines.append(f"| {name} | {first[name]:.1f} | {end:.1f} | {growth:+.1%} | "
                     f"{'met' if growth <= 0.10 else '**not met**'} |")
    print("\n".join(lines), flush=True)
    return lines


def scenarios(stack: Stack) -> dict[str, Callable[[requests.Session], bool]]:
    orchestrator = stack.urls["orchestrator"]
    services = [stack.urls[s] for s in "abc"]
    known: list[str] = []

    def orchestrated(session: requests.Session) -> bool:
        answer = session.post(f"{orchestrator}/start", json=USER, timeout=30)
        if answer.status_code == 200 and len(known) < 1000:
            known.append(answer.json()["saga_id"])
        return answer.status_code == 200

    fields = {"a": "username", "b": "address", "c": "payment"}

    def bare_chain(session: requests.Session) -> bool:
        saga_id = new_saga_id()  # ids as the orchestrator makes them
        for service, url in zip("abc", services, strict=True):
            body = json.dumps({"saga_id": saga_id, fields[service]: USER[fields[service]]}).encode()
            headers = {"Content-Type": "application/json",
                       SIGNATURE_HEADER: sign(stack.secret, "POST", "/invoke", body)}
            if session.post(f"{url}/invoke", data=body, headers=headers, timeout=30).status_code != 200:
                return False
        return True

    def choreographed(session: requests.Session) -> bool:
        answer = session.post(f"{services[0]}/signups", json=USER, timeout=30)
        if answer.status_code != 202:
            return False
        saga = session.get(f"{orchestrator}/choreography/sagas/{answer.json()['saga_id']}",
                           params={"wait": 20}, timeout=30)
        return saga.status_code == 200 and saga.json()["status"] == "COMPLETED"

    def one_failure(session: requests.Session) -> bool:
        answer = session.post(f"{orchestrator}/start?fail_b=before_commit", json=USER, timeout=30)
        return answer.status_code == 500 and answer.json()["status"] == "COMPENSATED"

    def list_sagas(session: requests.Session) -> bool:
        return session.get(f"{orchestrator}/sagas?limit=50", timeout=30).status_code == 200

    def one_saga(session: requests.Session) -> bool:
        saga_id = known[int(time.perf_counter() * 1e6) % len(known)]
        return session.get(f"{orchestrator}/sagas/{saga_id}", timeout=30).status_code == 200

    return {"orchestrated": orchestrated, "bare chain": bare_chain, "choreographed": choreographed,
            "one failure": one_failure, "GET /sagas?limit=50": list_sagas, "GET /sagas/<id>": one_saga}


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


@dataclass
class Summary:
    """The figures the performance targets speak of, for one database."""

    database: str
    runs: dict[str, Result]

    def get(self, name: str, clients: int) -> Result | None:
        return self.runs.get(f"{name}@{clients}")


def bench_database(url: str | None, args: argparse.Namespace,
                   clients: list[int]) -> tuple[list[str], Summary]:
    """Every run on one database: its tables, and the results the summary compares."""
    database = make_url(url).get_backend_name() if url else "sqlite"
    lines = [f"\n### {database}"]
    summary = Summary(database, {})

    def record(result: Result) -> Result:
        summary.runs[f"{result.name}@{result.clients}"] = result
        print(result.row(), flush=True)
        return result

    with tempfile.TemporaryDirectory() as workdir:
        stack = Stack(Path(workdir), url, settings=PRODUCTION).start()
        try:
            runs = scenarios(stack)
            closed_loop("warm-up", 16, 5, runs["orchestrated"])  # fill pools and caches first
            closed_loop("warm-up", 4, 1, runs["bare chain"])
            closed_loop("warm-up", 4, 2, runs["choreographed"])
            lines += header("#### Happy path: orchestrated against the bare chain")
            ratios = []
            cpu: dict[str, dict[str, float]] = {}
            for n in clients:
                orchestrated, cpu[f"orchestrated, {n} clients"] = measured_loop(
                    stack, "orchestrated", n, args.seconds, runs["orchestrated"])
                bare, cpu[f"bare chain, {n} clients"] = measured_loop(
                    stack, "bare chain", n, args.seconds, runs["bare chain"])
                ratios.append((n, orchestrated.rate / bare.rate if bare.rate else float("nan")))
                lines += [record(orchestrated).row(), record(bare).row()]
            lines.append("\n| clients | orchestrated / bare |\n|---|---|")
            lines += [f"| {n} | {ratio:.2f} |" for n, ratio in ratios]
            lines += header("#### Choreographed, until the observer sees it COMPLETED: embedded transport")
            for n in (1, 16):
                result, cpu[f"choreographed (embedded), {n} clients"] = measured_loop(
                    stack, "choreographed", n, args.seconds, runs["choreographed"])
                lines.append(record(result).row())
            names = list(next(iter(cpu.values())))
            lines += ["\n#### Where the CPU goes: milliseconds of CPU per saga (or chain), by process\n",
                      "| run | " + " | ".join(names) + " | total |",
                      "|---" * (len(names) + 2) + "|"]
            lines += [f"| {run} | " + " | ".join(f"{ms[name]:.2f}" for name in names)
                      + f" | {sum(ms.values()):.2f} |" for run, ms in cpu.items()]
            lines += header("#### One failure (B fails three times, B and A compensated), and reads")
            for name, n in (("one failure", 16), ("GET /sagas?limit=50", 1), ("GET /sagas?limit=50", 16),
                            ("GET /sagas/<id>", 1), ("GET /sagas/<id>", 16)):
                lines.append(record(closed_loop(name, n, args.seconds, runs[name])).row())
            if args.log_size:
                lines += big_log(stack, args, runs)
            if args.soak_minutes:
                lines += memory_soak(stack, args.soak_minutes, runs)
        finally:
            stack.stop()
    with tempfile.TemporaryDirectory() as workdir:  # the same again, over RabbitMQ
        stack = Stack(Path(workdir), url, settings={**PRODUCTION, "BROKER_URL": args.broker_url}).start()
        try:
            runs = scenarios(stack)
            closed_loop("warm-up", 4, 2, runs["choreographed"])
            lines += header("#### Choreographed, until the observer sees it COMPLETED: RabbitMQ")
            for n in (1, 16):
                result = closed_loop("choreographed (RabbitMQ)", n, args.seconds, runs["choreographed"])
                lines.append(record(result).row())
        finally:
            stack.stop()
    return lines, summary


def big_log(stack: Stack, args: argparse.Namespace, runs: dict[str, Callable[[requests.Session], bool]]
            ) -> list[str]:
    """The happy path and the reads again, with --log-size sagas in the log."""
    # The figure to compare with, measured again just before the fill: this VM's speed drifts
    # over the minutes a run takes.
    before = closed_loop("orchestrated, just before the fill", 16, args.seconds, runs["orchestrated"])
    print(before.row(), flush=True)
    took = fill_log(stack, args.log_size)
    flushed = settle(stack.engines["orchestrator"])
    with stack.engines["orchestrator"].connect() as connection:
        total = connection.execute(text("SELECT COUNT(*) FROM sagas")).scalar_one()
    lines = header(f"#### With {total:,} sagas in the log (filled in {took:.0f} s, "
                   f"written out by the server {flushed:.0f} s later)")
    after = closed_loop("orchestrated", 16, args.seconds, runs["orchestrated"])
    lines += [before.row(), after.row()]
    print(lines[-1], flush=True)
    for name, n in (("GET /sagas?limit=50", 1), ("GET /sagas?limit=50", 16), ("GET /sagas/<id>", 1),
                    ("GET /sagas/<id>", 16)):
        lines.append(closed_loop(name, n, args.seconds, runs[name]).row())
        print(lines[-1], flush=True)
    lines.append(f"\nHappy path at 16 clients, with the big log / just before the fill: "
                 f"{after.rate / before.rate:.2f}")
    return lines


def targets(sqlite: Summary, server: Summary) -> list[str]:
    """The performance targets, each with what this run measured."""
    def at(summary: Summary, name: str, n: int) -> Result:
        result = summary.get(name, n)
        assert result is not None, f"{name} at {n} clients was not run"
        return result

    def mark(ok: bool) -> str:
        return "met" if ok else "**not met**"

    s16, m16 = at(sqlite, "orchestrated", 16), at(server, "orchestrated", 16)
    s64 = at(sqlite, "orchestrated", 64)
    lines = ["\n### The targets, in this run\n", "| target | measured | |", "|---|---|---|",
             f"| SQLite, 16 clients: p99 ≤ 250 ms | {s16.percentile(99):.0f} ms | "
             f"{mark(s16.percentile(99) <= 250)} |",
             f"| SQLite, 16 clients: ≥ 0.9 × {server.database} | {s16.rate:.0f} / {m16.rate:.0f} /s = "
             f"{s16.rate / m16.rate:.2f} | {mark(s16.rate >= 0.9 * m16.rate)} |",
             f"| SQLite, 64 clients: no error, ≥ 0.9 × its 16 clients | {s64.errors} errors, "
             f"{s64.rate / s16.rate:.2f} | {mark(s64.errors == 0 and s64.rate >= 0.9 * s16.rate)} |"]
    for summary in (sqlite, server):
        ratio = at(summary, "orchestrated", 16).rate / at(summary, "bare chain", 16).rate
        one = at(summary, "orchestrated", 1).percentile(50)
        lines += [f"| {summary.database}: orchestrated / bare chain at 16 clients ≥ 0.6 (aim 0.75) | "
                  f"{ratio:.2f} | {mark(ratio >= 0.6)} |",
                  f"| {summary.database}: one client, p50 ≤ 10 ms | {one:.1f} ms | {mark(one <= 10)} |"]
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--clients", default="1,4,16,64")
    parser.add_argument("--database-url", default=os.environ.get("BENCH_DATABASE_URL") or MYSQL,
                        help="the MySQL/MariaDB server measured after SQLite")
    parser.add_argument("--broker-url", default=os.environ.get("BENCH_BROKER_URL") or BROKER)
    parser.add_argument("--only", choices=("sqlite", "server"), help="one database instead of both")
    parser.add_argument("--log-size", type=int, default=0,
                        help="sagas put in the log for a last round of the happy path and reads")
    parser.add_argument("--soak-minutes", type=float, default=0,
                        help="then a soak of this many minutes, with each process's memory before and after")
    args = parser.parse_args()
    clients = [int(n) for n in args.clients.split(",")]
    lines = [f"_make bench — {time.strftime('%Y-%m-%d')}, {os.cpu_count()} cores, "
             f"{platform.python_implementation()} {platform.python_version()}, {args.seconds:g} s per run, "
             f"the load generator on the same machine_"]
    summaries = []
    for url in ([None] if args.only == "sqlite" else [args.database_url] if args.only == "server"
                else [None, args.database_url]):
        section, summary = bench_database(url, args, clients)
        lines += section
        summaries.append(summary)
    if len(summaries) == 2 and all(n in clients for n in (1, 16, 64)):
        lines += targets(*summaries)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
