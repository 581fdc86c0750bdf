"""The randomised soak: many sagas, 16 clients, random faults, the orchestrator killed again and again.

`make soak` runs a longer one: SOAK_SAGAS, SOAK_CLIENTS and SOAK_KILL_EVERY set its size.
"""

from __future__ import annotations

import os
import random
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import requests
from sqlalchemy import text
from tenacity import RetryError, Retrying, retry_if_exception_type, stop_after_delay, wait_fixed

from scripts.stack import Stack
from tests.support.people import fresh_user

SAGAS = int(os.environ.get("SOAK_SAGAS", "400"))
CLIENTS = int(os.environ.get("SOAK_CLIENTS", "16"))
KILL_EVERY = float(os.environ.get("SOAK_KILL_EVERY", "1.5"))
FAULTS = (["before_commit", "after_commit", "transient:1", "transient:2", "transient:3",
           "delay:50", "delay:200", "compensate_transient:1", "compensate_transient:3"] * 4
          + ["timeout"])


def random_faults(rng: random.Random) -> dict[str, str]:
    return {step: rng.choice(FAULTS) for step in "abc" if rng.random() < 0.25}


class StillRunning(Exception):
    """409: the saga of this key is still running (perhaps being recovered)."""


def run_one(stack: Stack, rng: random.Random) -> dict[str, Any]:
    """Start one saga and keep asking (same Idempotency-Key, same body) until it has a final answer."""
    key = uuid.uuid4().hex
    body = {**fresh_user(), "fail": random_faults(rng)}
    try:  # until the orchestrator, killed under us perhaps, answers with the saga's end
        for attempt in Retrying(stop=stop_after_delay(120), wait=wait_fixed(0.1),
                                retry=retry_if_exception_type((requests.RequestException, StillRunning))):
            with attempt:
                answer = requests.post(f"{stack.urls['orchestrator']}/start", json=body, timeout=60,
                                       headers={"Idempotency-Key": key})
                if answer.status_code == 409:
                    raise StillRunning(key)
    except RetryError:
        with stack.engines["orchestrator"].connect() as connection:
            row = connection.execute(text("SELECT * FROM sagas WHERE idempotency_key = :k"),
                                     {"k": key}).mappings().first()
        raise AssertionError(f"no final answer for {key} in 120 s; in the log: {row}") from None
    assert answer.status_code in (200, 500, 504), answer.text
    return {"key": key, "fail": body["fail"], **answer.json()}


def test_soak_with_repeated_orchestrator_kills(fresh_stack: Stack) -> None:
    stack = fresh_stack
    done = threading.Event()
    kills = 0

    def killer() -> None:
        nonlocal kills
        while not done.wait(KILL_EVERY):
            stack.kill("orchestrator")
            kills += 1
            stack.restart("orchestrator")

    chaos = threading.Thread(target=killer, daemon=True)
    chaos.start()
    rng = random.Random(os.environ.get("SOAK_SEED", "2026"))
    seeds = [rng.random() for _ in range(SAGAS)]
    try:
        with ThreadPoolExecutor(CLIENTS) as pool:
            answers = list(pool.map(lambda seed: run_one(stack, random.Random(seed)), seeds))
    finally:
        done.set()
        chaos.join()
    assert kills >= 2, f"the orchestrator was killed only {kills} time(s)"

    with stack.engines["orchestrator"].connect() as connection:
        final = dict(connection.execute(text("SELECT id, status FROM sagas")).all())
        keys = connection.execute(text("SELECT COUNT(DISTINCT idempotency_key) FROM sagas")).scalar_one()
    assert len(final) == keys == SAGAS, "one saga per key, none lost, none doubled"
    for answer in answers:
        assert final[answer["saga_id"]] == answer["status"], answer
    assert set(final.values()) <= {"COMPLETED", "COMPENSATED"}, "every saga finished"
    report = requests.get(f"{stack.urls['orchestrator']}/consistency", timeout=120).json()
    assert report["complete"] and report["checked"] == SAGAS
    assert report["violations"] == [], report["violations"][:5]
    print(f"\nsoak: {SAGAS} sagas, {CLIENTS} clients, {kills} orchestrator kills, "
          f"{sum(s == 'COMPLETED' for s in final.values())} completed, 0 violations")
