"""The rounds of `make bench` on one database: the project's processes with the shipped
settings, the bare chain (against them, and against participants with their safety off), both
choreography transports, a failure path, the reads, how soon a killed process serves again and
a fault past its slots is refused, and the system it replaces."""

from __future__ import annotations

import argparse
import json
import subprocess
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from statistics import median

import requests
from sqlalchemy import Engine, insert, make_url, text
from tenacity import Retrying, retry_if_exception_type, stop_after_delay, wait_fixed

from common.db import utcnow
from common.ids import new_saga_id
from common.signing import SIGNATURE_HEADER, sign
from orchestrator.store import saga_events, sagas
from scripts.bench.loops import One, Result, closed_loop, fresh_user, measured, process_ids, rss_mib
from scripts.bench.peer import Peer, Running
from scripts.stack import SIGNUP, Stack, database_urls, drop_databases, free_port

# The shipped defaults, not the tests' fast ones: this measures what users run (with fault
# injection on, as make run has it, for the failure path).
PRODUCTION = {"CALL_TIMEOUT": "5", "CALL_RETRIES": "2", "COMPENSATION_RETRIES": "5",
              "RETRY_BACKOFF": "0.2", "RETRY_BACKOFF_MAX": "2", "RETRY_JITTER": "0.1",
              "LEASE_SECONDS": "30", "RECOVERY_INTERVAL": "2", "COMPENSATION_RETRY_AFTER": "30",
              "FAULT_LATE_MARGIN": "0.5", "FAULTS_ENABLED": "1", "CHOREOGRAPHY_DEADLINE": "15",
              "CHOREOGRAPHY_POLL": "0.5", "FAULT_SLEEP_SLOTS": "8", "GUNICORN_THREADS": "32"}
MYSQL = "mysql+pymysql://root@127.0.0.1:3306/test"
BROKER = "amqp://guest:guest@127.0.0.1:5672/%2F"
FIELDS = {service.name: service.field for service in SIGNUP.services}


def memory_soak(stack: Stack, minutes: float, runs: dict[str, One]
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


def chain(urls: dict[str, str], secret: str | None) -> One:
    """The bare chain: A, B and C's /invoke called by the client itself, one after another
    (signed, unless `secret` is None: for participants that check no signature)."""
    def bare_chain(session: requests.Session) -> bool:
        saga_id, user = new_saga_id(), fresh_user()  # ids as the orchestrator makes them
        for service, url in urls.items():
            body = json.dumps({"saga_id": saga_id, FIELDS[service]: user[FIELDS[service]]}).encode()
            headers = {"Content-Type": "application/json"}
            if secret is not None:
                headers[SIGNATURE_HEADER] = sign(secret, "POST", "/invoke", body)
            if session.post(f"{url}/invoke", data=body, headers=headers, timeout=30).status_code != 200:
                return False
        return True

    return bare_chain


def scenarios(stack: Stack) -> dict[str, One]:
    orchestrator = stack.urls["orchestrator"]
    services = [stack.urls[s] for s in "abc"]
    known: list[str] = []

    def orchestrated(session: requests.Session) -> bool:
        answer = session.post(f"{orchestrator}/start", json=fresh_user(), timeout=30)
        if answer.status_code == 200 and len(known) < 1000:
            known.append(answer.json()["saga_id"])
        return answer.status_code == 200

    bare_chain = chain({s: stack.urls[s] for s in "abc"}, stack.secret)

    def completed(session: requests.Session, saga_id: str) -> bool:
        """Wait for the observer to see the saga end; asked again when it could not hold the
        wait (every slot taken: answered at once, with Retry-After)."""
        give_up = time.monotonic() + 30
        while True:
            saga = session.get(f"{orchestrator}/choreography/sagas/{saga_id}", params={"wait": 20},
                               timeout=30)
            done = saga.status_code == 200 and saga.json()["status"] == "COMPLETED"
            if done or "Retry-After" not in saga.headers or time.monotonic() > give_up:
                return done
            time.sleep(float(saga.headers["Retry-After"]))

    def choreographed(session: requests.Session) -> bool:
        answer = session.post(f"{services[0]}/signups", json=fresh_user(), timeout=30)
        return answer.status_code == 202 and completed(session, answer.json()["saga_id"])

    def semantic_lock(session: requests.Session) -> bool:  # the same, A's row PENDING until /confirm
        answer = session.post(f"{orchestrator}/start", json={**fresh_user(), "isolation": "semantic_lock"},
                              timeout=30)
        return answer.status_code == 200

    def choreographed_lock(session: requests.Session) -> bool:
        answer = session.post(f"{services[0]}/signups", json={**fresh_user(), "isolation": "semantic_lock"},
                              timeout=30)
        return answer.status_code == 202 and completed(session, answer.json()["saga_id"])

    def one_failure(session: requests.Session) -> bool:
        answer = session.post(f"{orchestrator}/start?fail_b=before_commit", json=fresh_user(), timeout=30)
        return answer.status_code == 500 and answer.json()["status"] == "COMPENSATED"

    def list_sagas(session: requests.Session) -> bool:
        return session.get(f"{orchestrator}/sagas?limit=50", timeout=30).status_code == 200

    def one_saga(session: requests.Session) -> bool:
        saga_id = known[int(time.perf_counter() * 1e6) % len(known)]
        return session.get(f"{orchestrator}/sagas/{saga_id}", timeout=30).status_code == 200

    return {"orchestrated": orchestrated, "bare chain": bare_chain, "choreographed": choreographed,
            "orchestrated, semantic lock": semantic_lock, "choreographed, semantic lock": choreographed_lock,
            "one failure": one_failure, "GET /sagas?limit=50": list_sagas, "GET /sagas/<id>": one_saga}


def fill_log(stack: Stack, total: int, batch: int = 20_000) -> float:
    """Put `total` finished sagas (with three events each) in the log; seconds it took."""
    started = time.perf_counter()
    engine = stack.engines["orchestrator"]
    base = utcnow() - timedelta(days=30)
    inputs, faults = json.dumps(fresh_user()), "{}"  # log rows only: no account at A holds it
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
    runs: dict[str, Result] = field(default_factory=dict)
    cpu: dict[str, dict[str, float]] = field(default_factory=dict)  # run -> process -> ms per saga
    peer: dict[int, tuple[Result, float]] = field(default_factory=dict)  # clients -> result, CPU ms

    def get(self, name: str, clients: int) -> Result | None:
        return self.runs.get(f"{name}@{clients}")

    def record(self, result: Result, cpu: dict[str, float] | None = None) -> str:
        key = f"{result.name}@{result.clients}"
        self.runs[key] = result
        if cpu is not None:
            self.cpu[key] = cpu
        print(result.row(), flush=True)
        return result.row()


def cpu_table(summary: Summary) -> list[str]:
    """Milliseconds of CPU per saga (or chain), by process, for every run measured so."""
    names = sorted({name for ms in summary.cpu.values() for name in ms},
                   key=lambda n: (n in ("database server", "broker", "load generator"), n))
    lines = ["\n#### Where the CPU goes: milliseconds of CPU per saga (or chain), by process\n",
             "| run | " + " | ".join(names) + " | total |", "|---" * (len(names) + 2) + "|"]
    lines += [f"| {run} | " + " | ".join(f"{ms[n]:.2f}" if n in ms else "" for n in names)
              + f" | {sum(ms.values()):.2f} |" for run, ms in summary.cpu.items()]
    return lines


def bench_database(url: str | None, args: argparse.Namespace, clients: list[int],
                   peer: Peer | None) -> tuple[list[str], Summary]:
    """Every run on one database: its tables, and the results the summary compares."""
    database = make_url(url).get_backend_name() if url else "sqlite"
    lines = [f"\n### {database}"]
    summary = Summary(database)
    with tempfile.TemporaryDirectory() as workdir, ExitStack() as beside:
        stack = Stack(Path(workdir), url, settings=PRODUCTION).start()
        running = None
        if peer is not None:
            try:
                running = beside.enter_context(Running(peer))
            except (RuntimeError, OSError, subprocess.SubprocessError) as error:
                lines.append(f"\nThe system it replaces could not be started: {error}")
        try:
            runs = scenarios(stack)
            ids = process_ids(stack)
            closed_loop("warm-up", 16, 5, runs["orchestrated"])  # fill pools and caches first
            closed_loop("warm-up", 4, 1, runs["bare chain"])
            closed_loop("warm-up", 4, 2, runs["choreographed"])
            # First, while the stack's pools are small: three more processes on the same server;
            # the signed chain right before them, to set beside them measured in the same minute.
            signed = measured(ids, "bare chain, beside the unguarded", 16, args.seconds, runs["bare chain"])
            unguarded = unguarded_chain(stack, args.seconds)
            lines += header("#### Happy path: orchestrated against the bare chain and, in the same "
                            "minute, the system this project replaces")
            for n in clients:
                for name in ("orchestrated", "bare chain"):
                    lines.append(summary.record(*measured(ids, name, n, args.seconds, runs[name])))
                if running is not None and n in (1, 16):
                    result, cpu_ms = running.measure(n, args.seconds)
                    summary.peer[n] = (result, cpu_ms)
                    lines.append(summary.record(result))
            if running is not None:
                beside.close()  # stopped before the rest, which it would only slow
                lines.append(f"\nThe system it replaces, CPU per saga (its four processes; not its "
                             f"database server): {summary.peer[1][1]:.2f} ms at 1 client, "
                             f"{summary.peer[16][1]:.2f} ms at 16.\n")
            elif peer is None:
                lines.append("\nThe system it replaces is not here (no fetched copy of its repository; "
                             "see scripts/bench/peer.py): not measured.\n")
            lines += header("#### Choreographed, until the observer sees it COMPLETED: embedded transport")
            for n in (1, 16, 64):
                result, cpu = measured(ids, "choreographed", n, args.seconds, runs["choreographed"])
                lines.append(summary.record(result, cpu))
            lines += header("#### What the semantic lock costs (docs/isolation.md): the same sagas under "
                            "\"isolation\": \"semantic_lock\", beside the plain ones")
            for name in ("orchestrated", "orchestrated, semantic lock", "choreographed",
                         "choreographed, semantic lock"):
                lines.append(summary.record(*measured(ids, f"{name} (lock round)" if "lock" not in name
                                                      else name, 16, args.seconds, runs[name])))
            lines += header("#### The bare chain again, against participants with no signature check, "
                            "no metrics and no spans (scripts/unguarded.py), each measured first, "
                            "one after the other")
            lines.append(summary.record(*signed))
            lines.append(summary.record(*unguarded))
            lines += header("#### One failure (B fails three times, B and A compensated), and reads")
            for name, n in (("one failure", 16), ("GET /sagas?limit=50", 1), ("GET /sagas?limit=50", 16),
                            ("GET /sagas/<id>", 1), ("GET /sagas/<id>", 16)):
                lines.append(summary.record(closed_loop(name, n, args.seconds, runs[name])))
            lines += recovery_and_refusal(stack)
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
            ids = process_ids(stack)
            closed_loop("warm-up", 16, 3, runs["orchestrated"])
            closed_loop("warm-up", 4, 2, runs["choreographed"])
            lines += header("#### Choreographed over RabbitMQ, beside the orchestrated saga on the "
                            "same processes")
            for name, n, one in (("orchestrated (RabbitMQ run)", 16, runs["orchestrated"]),
                                 ("choreographed (RabbitMQ)", 1, runs["choreographed"]),
                                 ("choreographed (RabbitMQ)", 16, runs["choreographed"])):
                lines.append(summary.record(*measured(ids, name, n, args.seconds, one)))
        finally:
            stack.stop()
    lines += cpu_table(summary)
    return lines, summary


# The bounds the tests once timed, and no longer do: a suite sharing two cores cannot. They
# check that it happens (the process comes back and serves; the call past the slots is refused
# while every slot is still held); how soon is measured here.
RESTART_BOUND, REFUSAL_BOUND = 2.0, 2.5  # seconds


def back_after_kill(stack: Stack, name: str) -> float:
    """SIGKILL a process, start it again as the stack does: seconds until its /health answers 200
    (looked at every 10 ms)."""
    stack.kill(name)
    killed = time.perf_counter()
    stack.start_process(name)
    for attempt in Retrying(stop=stop_after_delay(30), wait=wait_fixed(0.01), reraise=True,
                            retry=retry_if_exception_type((requests.RequestException, AssertionError))):
        with attempt:
            assert requests.get(f"{stack.urls[name]}/health", timeout=1).status_code == 200
    return time.perf_counter() - killed


def refused_past_the_slots(stack: Stack, calls: int) -> tuple[list[float], int]:
    """Every one of B's FAULT_SLEEP_SLOTS taken by a call asleep before its commit, then `calls`
    more asking to sleep, one after another: the seconds each took to be refused (503
    fault_capacity), and how many calls did not go as meant."""
    slots, asleep = int(stack.settings["FAULT_SLEEP_SLOTS"]), "delay:3000"

    def sleepy() -> requests.Response:
        body = {"saga_id": new_saga_id(), "address": fresh_user()["address"]}
        return stack.signed_post("b", "/invoke", body, **{"X-Saga-Fault": asleep})

    marker = f"{asleep} sleeps"
    before = stack.log("b").count(marker)
    with ThreadPoolExecutor(slots) as pool:
        sleepers = [pool.submit(sleepy) for _ in range(slots)]
        for attempt in Retrying(stop=stop_after_delay(10), wait=wait_fixed(0.01), reraise=True):
            with attempt:
                assert stack.log("b").count(marker) >= before + slots, "the slots are not all taken yet"
        took, wrong = [], 0
        for _ in range(calls):
            started = time.perf_counter()
            answer = sleepy()
            took.append(time.perf_counter() - started)
            wrong += answer.status_code != 503 or answer.json()["error"]["code"] != "fault_capacity"
        wrong += sum(sleeper.result().status_code != 200 for sleeper in sleepers)
    return took, wrong


def recovery_and_refusal(stack: Stack, kills: int = 3, refusals: int = 20) -> list[str]:
    """How soon B and the orchestrator, killed with SIGKILL and started again, answer /health,
    and how soon a sleep asked of B past its FAULT_SLEEP_SLOTS is refused (a few seconds)."""
    def row(what: str, seconds: list[float], bound: float, wrong: int = 0) -> str:
        ok = max(seconds) < bound and not wrong
        return (f"| {what} | {len(seconds)} | {median(seconds) * 1000:.0f} | {max(seconds) * 1000:.0f} | "
                f"{wrong} | < {bound:g} s | {'met' if ok else '**not met**'} |")

    lines = ["\n#### A killed process back, and a fault past its slots refused: what the tests see "
             "happen, timed\n", "| what | times | median ms | max ms | errors | bound | |",
             "|---|---|---|---|---|---|---|"]
    for name in ("b", "orchestrator"):
        took = [back_after_kill(stack, name) for _ in range(kills)]
        lines.append(row(f"{name} killed (SIGKILL) and started again, until /health answers", took,
                         RESTART_BOUND))
        print(lines[-1], flush=True)
    took, wrong = refused_past_the_slots(stack, refusals)
    lines.append(row(f"a sleep asked of B with its {stack.settings['FAULT_SLEEP_SLOTS']} slots taken, "
                     "until its 503 fault_capacity", took, REFUSAL_BOUND, wrong))
    print(lines[-1], flush=True)
    return lines


def unguarded_chain(stack: Stack, seconds: float) -> tuple[Result, dict[str, float]]:
    """The bare chain (unsigned) against A, B and C started from scripts/unguarded.py, each with
    a database of its own, while the stack's own participants idle: a participant call's CPU
    without its safety, to set beside the signed chain's. Sixteen clients need no more than 16
    connections each: three more processes at the default pool would take MySQL past its
    default 151 connections beside a stack whose pools have grown."""
    ports = {name: free_port() for name in "abc"}
    workdir = stack.workdir / "unguarded"
    workdir.mkdir(exist_ok=True)
    urls = database_urls(stack.base_db_url, workdir, f"{stack.tag}u")
    try:
        for name in "abc":
            stack.start_process(name, ports[name], {"UNGUARDED_SERVICE": name, "DB_POOL_SIZE": "16",
                                                    f"SERVICE_{name.upper()}_DATABASE_URL": urls[name]},
                                label=f"unguarded {name}", app="scripts.unguarded:app")
        for name in "abc":
            stack.wait_healthy(f"unguarded {name}", f"http://127.0.0.1:{ports[name]}")
        one = chain({name: f"http://127.0.0.1:{ports[name]}" for name in "abc"}, None)
        closed_loop("warm-up", 16, 2, one)  # their pools opened before the round, not during it
        ids = {name: pids for name, pids in process_ids(stack).items() if name.startswith("unguarded")
               or name in ("database server", "load generator")}
        return measured(ids, "bare chain, unguarded", 16, seconds, one)
    finally:
        for name in "abc":
            process = stack.processes.pop(f"unguarded {name}", None)
            if process is not None:
                process.terminate()
                process.wait(timeout=30)
        drop_databases(stack.base_db_url, {k: v for k, v in urls.items() if k in "abc"})


def big_log(stack: Stack, args: argparse.Namespace, runs: dict[str, One]
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


