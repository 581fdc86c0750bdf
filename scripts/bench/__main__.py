"""`make bench`: both saga models against the bare chain and the system this project replaces,
on SQLite and on a MySQL/MariaDB server, in one run; a Markdown report on stdout, ending with
each performance target and whether this run met it."""

from __future__ import annotations

import argparse
import os
import platform
import time
from statistics import mean

from scripts.bench.loops import Result
from scripts.bench.peer import Peer, default_peer
from scripts.bench.rounds import BROKER, MYSQL, Summary, bench_database


def _mark(ok: bool) -> str:
    return "met" if ok else "**not met**"


def _participant_ms(cpu: dict[str, float]) -> float:
    """One participant's CPU per call: the mean over A, B and C (whatever they are named)."""
    return mean(ms for name, ms in cpu.items() if name[-1:] in "abc")


def _apps_ms(cpu: dict[str, float]) -> float:
    """The four processes' CPU per saga (not the database server, broker or load generator)."""
    return sum(ms for name, ms in cpu.items()
               if name not in ("database server", "broker", "load generator"))


def targets(summary: Summary) -> list[str]:
    """The performance targets for one database, each with what this run measured."""
    def at(name: str, n: int) -> Result:
        result = summary.get(name, n)
        assert result is not None, f"{name} at {n} clients was not run"
        return result

    def cpu(name: str, n: int) -> dict[str, float]:
        return summary.cpu[f"{name}@{n}"]

    o16, o1, bare = at("orchestrated", 16), at("orchestrated", 1), at("bare chain", 16)
    rows = [f"\n#### The targets on {summary.database}, in this run\n", "| target | measured | |",
            "|---|---|---|"]
    if summary.peer:
        peer16, peer1 = summary.peer[16][0], summary.peer[1][0]
        rows += [f"| 16 clients: ≥ 1.5 × the system it replaces (aim 2 ×) | {o16.rate:.0f} / "
                 f"{peer16.rate:.0f} /s = {o16.rate / peer16.rate:.2f} × | "
                 f"{_mark(o16.rate >= 1.5 * peer16.rate)} |",
                 f"| 1 client: p50 no higher than the system it replaces' | {o1.percentile(50):.1f} / "
                 f"{peer1.percentile(50):.1f} ms | {_mark(o1.percentile(50) <= peer1.percentile(50))} |"]
    else:
        rows.append("| against the system it replaces | not measured (not here) | |")
    orchestrator = cpu("orchestrated", 16)["orchestrator"]
    participant = _participant_ms(cpu("orchestrated", 16))
    signed = _participant_ms(cpu("bare chain, beside the unguarded", 16))
    unguarded = _participant_ms(cpu("bare chain, unguarded", 16))
    rows += [f"| 16 clients: ≥ 0.6 × the bare chain (aim 0.75 ×) | {o16.rate:.0f} / {bare.rate:.0f} /s = "
             f"{o16.rate / bare.rate:.2f} | {_mark(o16.rate >= 0.6 * bare.rate)} |",
             f"| 16 clients: p99 ≤ 2 × p50 | {o16.percentile(99):.0f} / {o16.percentile(50):.0f} ms = "
             f"{o16.percentile(99) / o16.percentile(50):.2f} | "
             f"{_mark(o16.percentile(99) <= 2 * o16.percentile(50))} |",
             f"| the orchestrator's CPU per saga ≤ 2 × a participant's per call | {orchestrator:.2f} / "
             f"{participant:.2f} ms = {orchestrator / participant:.2f} | "
             f"{_mark(orchestrator <= 2 * participant)} |",
             f"| a participant's call ≤ 1.3 × its CPU unsigned, uncounted, untraced | {signed:.2f} / "
             f"{unguarded:.2f} ms = {signed / unguarded:.2f} | {_mark(signed <= 1.3 * unguarded)} |"]
    for transport, choreographed, orchestrated in (
            ("embedded", "choreographed", "orchestrated"),
            ("RabbitMQ", "choreographed (RabbitMQ)", "orchestrated (RabbitMQ run)")):
        c16, base = at(choreographed, 16), at(orchestrated, 16)
        c_ms, o_ms = _apps_ms(cpu(choreographed, 16)), _apps_ms(cpu(orchestrated, 16))
        rows += [f"| choreography, {transport}: CPU per saga ≤ 1.5 × orchestrated | {c_ms:.2f} / "
                 f"{o_ms:.2f} ms = {c_ms / o_ms:.2f} | {_mark(c_ms <= 1.5 * o_ms)} |",
                 f"| choreography, {transport}: 16 clients ≥ 0.8 × orchestrated | {c16.rate:.0f} / "
                 f"{base.rate:.0f} /s = {c16.rate / base.rate:.2f} | {_mark(c16.rate >= 0.8 * base.rate)} |",
                 f"| choreography, {transport}: p99 ≤ 3 × p50 | {c16.percentile(99):.0f} / "
                 f"{c16.percentile(50):.0f} ms = {c16.percentile(99) / c16.percentile(50):.2f} | "
                 f"{_mark(c16.percentile(99) <= 3 * c16.percentile(50))} |"]
    for name in ("orchestrated", "choreographed"):
        if (n64 := summary.get(name, 64)) is not None:
            n16 = at(name, 16)
            rows.append(f"| {name}, 64 clients: no error, no slower than 16 | {n64.errors} errors, "
                        f"{n64.rate:.0f} / {n16.rate:.0f} /s | "
                        f"{_mark(n64.errors == 0 and n64.rate >= 0.95 * n16.rate)} |")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--clients", default="1,4,16,64",
                        help="the orchestrated and bare rounds' (1 and 16 always)")
    parser.add_argument("--database-url", default=os.environ.get("BENCH_DATABASE_URL") or MYSQL,
                        help="the MySQL/MariaDB server measured after SQLite")
    parser.add_argument("--broker-url", default=os.environ.get("BENCH_BROKER_URL") or BROKER)
    parser.add_argument("--only", choices=("sqlite", "server"), help="one database instead of both")
    parser.add_argument("--log-size", type=int, default=0,
                        help="sagas put in the log for a last round of the happy path and reads")
    parser.add_argument("--soak-minutes", type=float, default=0,
                        help="then a soak of this many minutes, with each process's memory before and after")
    parser.add_argument("--peer-up", help="a shell command that starts the system to compare with on "
                        "ports 5000-5003 and prints its pids (default: the seed system, if fetched)")
    parser.add_argument("--peer-down", help="the shell command that stops it")
    parser.add_argument("--no-peer", action="store_true", help="measure no other system")
    args = parser.parse_args()
    clients = sorted({1, 16, *(int(n) for n in args.clients.split(","))})
    peer = (None if args.no_peer else Peer(args.peer_up, args.peer_down or "true") if args.peer_up
            else default_peer())
    lines = [f"_make bench — {time.strftime('%Y-%m-%d')}, {os.cpu_count()} cores, "
             f"{platform.python_implementation()} {platform.python_version()}, {args.seconds:g} s per run, "
             f"the load generator on the same machine_"]
    if peer is not None:
        lines.append(f"\n_The system it replaces, started by `{peer.up}`_")
    for url in ([None] if args.only == "sqlite" else [args.database_url] if args.only == "server"
                else [None, args.database_url]):
        section, summary = bench_database(url, args, clients, peer)
        lines += section + targets(summary)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
