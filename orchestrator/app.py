"""The orchestrator's process: the saga engine, its recovery loop, the API and the dashboard."""

from __future__ import annotations

import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from flask import Flask

from choreography.flow import Flows
from common.db import make_engine, wait_for_database
from common.declaration import Definitions
from common.metrics import count_in_flight
from common.reads import saga_reads
from common.schema import create_tables
from common.web import base_app, keep, serve_openapi
from observer import api as observer_api
from observer.consistency import ChoreographedSagas
from observer.observer import Observer
from observer.tables import metadata as observer_metadata
from orchestrator.api import BLUEPRINTS
from orchestrator.client import ParticipantClient
from orchestrator.config import orchestrator_config
from orchestrator.engine import Defaults, SagaEngine
from orchestrator.failpoints import Failpoints
from orchestrator.gateway import ParticipantGateway
from orchestrator.instances import this_instance
from orchestrator.lab import IsolationLab, Race
from orchestrator.logbuffer import LogBuffer
from orchestrator.migrate import upgrade
from orchestrator.recovery import Recovery
from orchestrator.services import Services, services
from orchestrator.sources import OrchestratedSagas
from orchestrator.store import SagaStore
from ui import dashboard


def create_app(overrides: dict[str, Any] | None = None) -> Flask:
    """The orchestrator app; starts its recovery loop unless RECOVERY_ENABLED is off."""
    config = orchestrator_config(overrides)
    app = base_app("orchestrator", config)
    logs = LogBuffer()
    logging.getLogger("orchestrator").addHandler(logs)

    database = make_engine(config["DATABASE_URL"], config["DB_POOL_SIZE"], config["DB_TIMEOUT"])
    wait_for_database(database)
    upgrade(database)
    store = SagaStore(database, config["LEASE_SECONDS"])
    definitions: Definitions = config["DEFINITIONS"]
    client = ParticipantClient(config["SERVICE_SECRET"])
    defaults = Defaults(timeout=config["CALL_TIMEOUT"], retries=config["CALL_RETRIES"],
                        compensation_retries=config["COMPENSATION_RETRIES"],
                        backoff=config["RETRY_BACKOFF"], backoff_max=config["RETRY_BACKOFF_MAX"],
                        jitter=config["RETRY_JITTER"], lock_wait=config["LOCK_WAIT"])
    engine = SagaEngine(definitions, config["SERVICE_URLS"], store, client,
                        owner=str(this_instance(config["ORCHESTRATOR_ID"])), defaults=defaults,
                        failpoints=Failpoints(config["FAILPOINTS_FILE"]),
                        background=ThreadPoolExecutor(config["WORKER_THREADS"], thread_name_prefix="saga"),
                        queue_limit=config["ASYNC_QUEUE_LIMIT"])
    fields = {step.participant: step.receives for step in definitions.default.steps}
    recovery = Recovery(engine, config["RECOVERY_INTERVAL"], config["COMPENSATION_RETRY_AFTER"],
                        config["COMPENSATION_RETRY_ROUNDS"])
    gateway = ParticipantGateway(client, config["SERVICE_URLS"], fields)
    observing = start_observer(app, store, gateway)
    lab = IsolationLab(lambda: Race(definitions.default, engine, store, gateway, observing.observer,
                                    gateway.client.http, observing.entry_url))
    keep(app, Services(definitions=definitions, store=store, engine=engine, gateway=gateway,
                       recovery=recovery, logs=logs, observer=observing.observer, lab=lab,
                       sagas=(OrchestratedSagas(store, definitions), observing.sagas)))
    count_in_flight("sagas", lambda: {"orchestration": store.in_flight(),
                                      "choreography": observing.observer.in_flight()})
    for blueprint in BLUEPRINTS:
        app.register_blueprint(blueprint)
    app.register_blueprint(saga_reads("saga_reads", "", lambda: services().sagas[0],
                                      lambda: services().gateway))
    app.register_blueprint(dashboard)
    serve_openapi(app, "orchestrator")
    if config["RECOVERY_ENABLED"]:
        recovery.start()
    return app


def start_observer(app: Flask, store: SagaStore, gateway: ParticipantGateway) -> observer_api.Observing:
    """The choreography's observer, in this process beside the dashboard (it takes no part in
    the saga): its tables (in the saga log's database), its API, and over RabbitMQ its consumers."""
    config = app.config
    database = store.engine
    create_tables(database, observer_metadata)
    flows = Flows.of(config["DECLARATION"], config["DEFINITIONS"])
    observer = Observer(database, flows, orchestrated=store.holds)

    def knows_signup(saga_id: str) -> bool:
        return gateway.knows_signup(flows.default.entry, saga_id)

    observing = observer_api.Observing(
        observer=observer, flows=flows, rows=gateway, http=gateway.client.http,
        sagas=ChoreographedSagas(observer, knows_signup, config["CHOREOGRAPHY_STUCK_AFTER"]),
        secret=config["SERVICE_SECRET"], service_urls=config["SERVICE_URLS"], knows_signup=knows_signup,
        waits=threading.BoundedSemaphore(config["WAIT_SLOTS"]))
    keep(app, observing)
    for blueprint in observer_api.BLUEPRINTS:
        app.register_blueprint(blueprint)
    if config["BROKER_URL"]:
        from messaging.rabbitmq import OBSERVER_QUEUE, BrokerConsumer, DeadLetterConsumer

        url, namespace = config["BROKER_URL"], config["BROKER_NAMESPACE"]
        BrokerConsumer(url, namespace, OBSERVER_QUEUE, observer.receive_all, secret=config["SERVICE_SECRET"],
                       party=OBSERVER_QUEUE, routes=flows.routes).start()
        DeadLetterConsumer(url, namespace, observer.record_dead_letter, flows.routes).start()
    return observing
