"""What operators' tools read, checked on the real processes: Prometheus metrics (parsed with
prometheus-client's own parser), one OpenTelemetry trace per saga across the processes
(received over OTLP, as a back end would), and JSON logs."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families
from tenacity import Retrying, stop_after_delay, wait_fixed

from scripts.stack import PROCESSES, Stack
from tests.support.calls import choreographed, invoke, sign_up, start
from tests.support.people import fresh_user
from tests.support.stacks import TEST_DATABASE_URL
from tests.support.stand_ins import OtlpReceiver


@pytest.fixture(scope="module")
def traced(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Stack, OtlpReceiver]]:
    """A system of this module's own (so that only its sagas move the counters), exporting its
    spans over OTLP to a receiver here, and logging JSON lines."""
    receiver = OtlpReceiver()
    running = Stack(tmp_path_factory.mktemp("operations"), TEST_DATABASE_URL,
                    settings={"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url, "OTEL_BSP_SCHEDULE_DELAY": "50",
                              "LOG_FORMAT": "json"}).start()
    yield running, receiver
    running.stop()
    receiver.close()


def scrape(stack: Stack) -> dict[tuple[str, str, tuple[tuple[str, str], ...]], float]:
    """Every sample of the four processes: (process, name, labels) -> value."""
    samples = {}
    for process in PROCESSES:
        answer = requests.get(f"{stack.urls[process]}/metrics", timeout=5)
        assert answer.status_code == 200 and answer.headers["Content-Type"].startswith("text/plain")
        for family in text_string_to_metric_families(answer.text):
            for sample in family.samples:
                samples[(process, sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def moved(before: dict[Any, float], after: dict[Any, float], suffix: str = "_total") -> dict[str, float]:
    """The saga counters that changed, as `process name{labels}` -> by how much."""
    changed = {}
    for key, value in after.items():
        process, name, labels = key
        if name.startswith("saga_") and name.endswith(suffix) and value != before.get(key, 0.0):
            label_text = ",".join(f"{k}={v}" for k, v in labels)
            changed[f"{process} {name}{{{label_text}}}"] = value - before.get(key, 0.0)
    return changed


ORCHESTRATED_FAILURE_AT_C = {
    "orchestrator saga_sagas_started_total{model=orchestration}": 1,
    "orchestrator saga_sagas_finished_total{model=orchestration,status=COMPENSATED}": 1,
    "orchestrator saga_step_attempts_total{action=invoke,outcome=ok,step=a}": 1,
    "orchestrator saga_step_attempts_total{action=invoke,outcome=ok,step=b}": 1,
    "orchestrator saga_step_attempts_total{action=invoke,outcome=error,step=c}": 3,
    "orchestrator saga_step_attempts_total{action=compensate,outcome=ok,step=c}": 1,
    "orchestrator saga_step_attempts_total{action=compensate,outcome=ok,step=b}": 1,
    "orchestrator saga_step_attempts_total{action=compensate,outcome=ok,step=a}": 1,
    "orchestrator saga_compensations_total{model=orchestration,step=c}": 1,
    "orchestrator saga_compensations_total{model=orchestration,step=b}": 1,
    "orchestrator saga_compensations_total{model=orchestration,step=a}": 1,
    "a saga_participant_requests_total{action=invoke,result=applied,service=a}": 1,
    "a saga_participant_requests_total{action=compensate,result=compensated,service=a}": 1,
    "b saga_participant_requests_total{action=invoke,result=applied,service=b}": 1,
    "b saga_participant_requests_total{action=compensate,result=compensated,service=b}": 1,
    "c saga_participant_requests_total{action=invoke,result=fault,service=c}": 3,
    "c saga_participant_requests_total{action=compensate,result=cancelled,service=c}": 1,
}

CHOREOGRAPHED_FAILURE_AT_C = {
    "orchestrator saga_sagas_started_total{model=choreography}": 1,
    "orchestrator saga_sagas_finished_total{model=choreography,status=COMPENSATED}": 1,
    "orchestrator saga_compensations_total{model=choreography,step=b}": 1,
    "orchestrator saga_compensations_total{model=choreography,step=a}": 1,
    **{f"orchestrator saga_events_received_total{{result=new,service=observer,type={t}}}": 1
       for t in ("SignupRequested", "AccountCreated", "AddressStored", "PaymentFailed", "AddressRemoved",
                 "AccountRemoved")},
    "a saga_events_handled_total{result=ok,service=a,type=SignupRequested}": 1,
    "a saga_events_handled_total{result=ok,service=a,type=AddressRemoved}": 1,
    "a saga_events_received_total{result=new,service=a,type=AddressRemoved}": 1,
    "a saga_events_published_total{destination=b,service=a}": 1,
    "a saga_events_published_total{destination=observer,service=a}": 3,
    "b saga_events_handled_total{result=ok,service=b,type=AccountCreated}": 1,
    "b saga_events_handled_total{result=ok,service=b,type=PaymentFailed}": 1,
    "b saga_events_received_total{result=new,service=b,type=AccountCreated}": 1,
    "b saga_events_received_total{result=new,service=b,type=PaymentFailed}": 1,
    "b saga_events_published_total{destination=c,service=b}": 1,
    "b saga_events_published_total{destination=a,service=b}": 1,
    "b saga_events_published_total{destination=observer,service=b}": 2,
    "c saga_events_handled_total{result=retry,service=c,type=AddressStored}": 2,
    "c saga_events_handled_total{result=gave_up,service=c,type=AddressStored}": 1,
    "c saga_events_received_total{result=new,service=c,type=AddressStored}": 1,
    "c saga_events_published_total{destination=b,service=c}": 1,
    "c saga_events_published_total{destination=observer,service=c}": 1,
}


def test_a_failure_at_c_moves_exactly_the_counters_it_should(traced: tuple[Stack, OtlpReceiver]) -> None:
    stack, _ = traced
    before = scrape(stack)
    answer = start(stack, fresh_user(), c="before_commit")
    assert answer.json()["status"] == "COMPENSATED"
    after = scrape(stack)
    assert moved(before, after) == ORCHESTRATED_FAILURE_AT_C
    durations = moved(before, after, "_count")
    assert durations["orchestrator saga_duration_seconds_count{model=orchestration,status=COMPENSATED}"] == 1
    assert durations["orchestrator saga_call_duration_seconds_count{action=invoke,step=c}"] == 3
    assert durations["c saga_participant_handler_duration_seconds_count{action=invoke,service=c}"] == 3
    in_flight = after[("orchestrator", "saga_sagas_in_flight", (("model", "orchestration"),))]
    assert in_flight == 0


def test_a_choreographed_failure_at_c_moves_exactly_the_counters_it_should(
        traced: tuple[Stack, OtlpReceiver]) -> None:
    stack, _ = traced
    before = scrape(stack)
    saga_id = sign_up(stack, c="before_commit")
    assert choreographed(stack, saga_id)["status"] == "COMPENSATED"
    for attempt in Retrying(stop=stop_after_delay(10), wait=wait_fixed(0.2), reraise=True):
        with attempt:  # the relays mark each delivery once its destination confirmed it
            assert moved(before, scrape(stack)) == CHOREOGRAPHED_FAILURE_AT_C


def spans_of(receiver: OtlpReceiver, trace_id: str, count: int) -> list[dict[str, Any]]:
    for attempt in Retrying(stop=stop_after_delay(15), wait=wait_fixed(0.2), reraise=True):
        with attempt:  # exported in batches
            spans = receiver.of_trace(trace_id)
            assert len(spans) >= count, [s["name"] for s in spans]
    return spans


def test_one_trace_per_saga_across_the_four_processes(traced: tuple[Stack, OtlpReceiver]) -> None:
    stack, receiver = traced
    saga_id = start(stack, fresh_user(), c="before_commit").json()["saga_id"]
    trace_id = requests.get(f"{stack.urls['orchestrator']}/sagas/{saga_id}", timeout=5).json()["trace_id"]
    assert len(trace_id) == 32 and int(trace_id, 16)
    spans = spans_of(receiver, trace_id, 1 + 1 + 8 + 8)  # root, drive, 8 attempts, 8 handled calls
    by_id = {span["span_id"]: span for span in spans}
    root = [span for span in spans if span["parent_id"] is None]
    assert len(root) == 1 and root[0]["service"] == "orchestrator"
    assert root[0]["attributes"]["saga.id"] == saga_id
    drive = [s for s in spans if s["name"] == "drive signup@1"]
    assert [d["parent_id"] for d in drive] == [root[0]["span_id"]]
    attempts = [s for s in spans if s["parent_id"] == drive[0]["span_id"]]
    assert [(s["name"], s["attributes"]["saga.attempt"], s["attributes"]["saga.outcome"])
            for s in attempts] == [
        ("invoke a", 1, "ok"), ("invoke b", 1, "ok"), ("invoke c", 1, "error"), ("invoke c", 2, "error"),
        ("invoke c", 3, "error"), ("compensate c", 1, "ok"), ("compensate b", 1, "ok"),
        ("compensate a", 1, "ok")]
    assert [s["attributes"].get("http.response.status_code") for s in attempts] == [200, 200, 500, 500, 500,
                                                                                     200, 200, 200]
    served = [s for s in spans if s["service"].startswith("service_")]
    assert len(served) == 8
    for span in served:  # each participant's span is a child of the orchestrator's attempt
        caller = by_id[span["parent_id"]]
        assert caller["service"] == "orchestrator" and caller in attempts
        assert span["service"] == f"service_{caller['attributes']['saga.step']}"
    log = stack.log("orchestrator")
    assert f'"trace_id": "{trace_id}"' in log, "the trace id is logged with the saga's lines"


def test_a_choreographed_saga_is_one_trace_too(traced: tuple[Stack, OtlpReceiver]) -> None:
    stack, receiver = traced
    saga_id = sign_up(stack, c="before_commit")
    choreographed(stack, saga_id)
    spans = [s for s in receiver.spans if s["attributes"].get("saga.id") == saga_id]
    assert len({s["trace_id"] for s in spans}) == 1
    assert choreographed(stack, saga_id)["trace_id"] == spans[0]["trace_id"], "the observer knows it"
    handled = spans_of(receiver, spans[0]["trace_id"], 1 + 1 + 1 + 3 + 1 + 1 + 1)  # C: 3 tries, giving up
    by_id = {span["span_id"]: span for span in handled}
    names = sorted((s["service"], s["name"]) for s in handled if s["parent_id"])
    assert ("service_b", "apply on AccountCreated") in names
    assert ("service_a", "compensate on AddressRemoved") in names
    for span in handled:  # every handler hangs under the one whose event it handled
        if span["parent_id"]:
            assert span["parent_id"] in by_id, span


def test_json_logs_are_one_object_a_line_everywhere(traced: tuple[Stack, OtlpReceiver]) -> None:
    stack, _ = traced
    saga_id = start(stack, fresh_user(), c="transient:1").json()["saga_id"]
    for process in PROCESSES:
        lines = [line for line in stack.log(process).splitlines() if line.strip()]
        parsed = [json.loads(line) for line in lines]  # every line, gunicorn's included
        assert all({"time", "level", "process", "saga_id", "step", "attempt", "trace_id", "message"} <= set(p)
                   for p in parsed)
    # An attempt that went wrong is logged with its step and number (one that went well, at DEBUG).
    lines = [json.loads(line) for line in stack.log("orchestrator").splitlines() if saga_id in line]
    attempts = [line for line in lines if " attempt " in line["message"]]
    assert [(a["saga_id"], a["step"], a["attempt"], a["level"]) for a in attempts] == [
        (saga_id, "c", 1, "INFO")]
    assert all(a["trace_id"] and len(a["trace_id"]) == 32 for a in attempts)


def test_metrics_add_up_across_gunicorn_workers(make_stack: Any) -> None:
    stack = make_stack(GUNICORN_WORKERS="2")
    for _ in range(12):
        assert invoke(stack, "b", uuid.uuid4().hex).status_code == 200
    for attempt in Retrying(stop=stop_after_delay(5), wait=wait_fixed(0.2), reraise=True):
        with attempt:  # whichever worker answers the scrape sums both
            samples = scrape(stack)
            key = ("b", "saga_participant_requests_total",
                   (("action", "invoke"), ("result", "applied"), ("service", "b")))
            assert samples[key] == 12
