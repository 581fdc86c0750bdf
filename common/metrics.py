"""Every Prometheus metric the four processes expose at GET /metrics, in one place.

Names follow Prometheus' conventions: `saga_` then what is measured, base units (`_seconds`),
counters ending in `_total`, and label values from small fixed sets (a model, a step, an
action, an outcome, a status, an event type; never a saga id). Each process exposes the ones
it moves: the orchestrator the saga and call metrics (and, as the choreography's observer,
the choreographed sagas'), a participant its requests, handlers and events.

Under one gunicorn worker (what `make run` and compose ship) the default registry is right;
with more workers, gunicorn.conf.py sets PROMETHEUS_MULTIPROC_DIR and every worker's values
are added up at each scrape (prometheus-client's multiprocess mode).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    multiprocess,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
SAGA_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)

# Sagas, both models (model: orchestration | choreography) -------------------------------------
SAGAS_STARTED = Counter("saga_sagas_started_total", "Sagas started.", ["model"])
SAGAS_FINISHED = Counter("saga_sagas_finished_total", "Sagas that reached a final status.",
                         ["model", "status"])
SAGA_DURATION = Histogram("saga_duration_seconds", "From a saga's start to its final status.",
                          ["model", "status"], buckets=SAGA_BUCKETS)
COMPENSATIONS = Counter("saga_compensations_total", "Steps undone (or cancelled, for a pivot).",
                        ["model", "step"])
COMPENSATIONS_FAILED = Counter("saga_compensations_failed_total",
                               "Compensations that failed for good (the saga is COMPENSATION_FAILED).",
                               ["model", "step"])

# The orchestrator's calls and leases ------------------------------------------------------------
STEP_ATTEMPTS = Counter("saga_step_attempts_total",
                        "Calls to participants (outcome: ok, error, timeout, unreachable, rejected).",
                        ["step", "action", "outcome"])
CALL_DURATION = Histogram("saga_call_duration_seconds", "One call to a participant, until its answer.",
                          ["step", "action"], buckets=LATENCY_BUCKETS)
RECOVERY_CLAIMS = Counter("saga_recovery_claims_total",
                          "Sagas claimed by the recovery loop (kind: resumed, reopened).", ["kind"])
LEASES_LOST = Counter("saga_leases_lost_total",
                      "Drives stopped because another orchestrator holds the saga now.")

# Participants -------------------------------------------------------------------------------------
PARTICIPANT_REQUESTS = Counter(
    "saga_participant_requests_total",
    "Calls a participant answered (action: invoke, compensate, cancel; result: applied, refused, "
    "compensated, cancelled, fault, invalid, unauthorized, unavailable, error).",
    ["service", "action", "result"])
HANDLER_DURATION = Histogram("saga_participant_handler_duration_seconds",
                             "Time a participant took to answer a call or handle an event.",
                             ["service", "action"], buckets=LATENCY_BUCKETS)

# Choreography: events -----------------------------------------------------------------------------
EVENTS_PUBLISHED = Counter("saga_events_published_total",
                           "Events a relay handed to their destination (which confirmed them).",
                           ["service", "destination"])
EVENTS_RECEIVED = Counter("saga_events_received_total",
                          "Events that arrived at an inbox or the observer (result: new, duplicate).",
                          ["service", "type", "result"])
EVENTS_HANDLED = Counter("saga_events_handled_total",
                         "Event handler attempts (result: ok, retry, gave_up).",
                         ["service", "type", "result"])
DEAD_LETTERS = Counter("saga_dead_letters_total",
                       "Events set aside for good (where: outbox, inbox, broker).", ["service", "where"])
EVENTS_REFUSED = Counter("saga_events_refused_total",
                         "Events refused and never handled (reason: malformed, not_owner, unsigned, "
                         "wrong_publisher, wrong_model, not_taken).", ["service", "reason"])
REDRIVEN = Counter("saga_dead_letters_redriven_total",
                   "Dead-lettered events sent or handled again on request (where: outbox, inbox, broker).",
                   ["service", "where"])


class _InFlight(Collector):
    """saga_sagas_in_flight, asked of the records at each scrape (so every worker and every
    orchestrator sharing a log agree)."""

    def __init__(self) -> None:
        self.sources: dict[str, Callable[[], dict[str, int]]] = {}

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily("saga_sagas_in_flight", "Sagas not yet at a final status.",
                                   labels=["model"])
        for source in self.sources.values():
            try:
                counts = source()
            except Exception:  # noqa: BLE001 - a scrape must not fail because the database is down
                continue
            for model, count in counts.items():
                family.add_metric([model], count)
        yield family


IN_FLIGHT = _InFlight()
REGISTRY.register(IN_FLIGHT)


def count_in_flight(name: str, source: Callable[[], dict[str, int]]) -> None:
    """Make `source` ({model: sagas in flight}) the one called `name` behind saga_sagas_in_flight."""
    IN_FLIGHT.sources[name] = source


def exposition() -> tuple[bytes, str]:
    """The text exposition of this process's metrics (of all its workers, in multiprocess mode)."""
    if "PROMETHEUS_MULTIPROC_DIR" in os.environ:
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        registry.register(IN_FLIGHT)
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST
