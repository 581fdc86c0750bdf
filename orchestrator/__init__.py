"""The saga orchestrator: runs sign-up sagas over services A, B and C and serves the UI."""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from flask import Flask

from common.db import init_database, make_engine
from common.web import base_app
from orchestrator.api import api
from orchestrator.client import ParticipantClient
from orchestrator.config import orchestrator_config
from orchestrator.engine import SagaEngine
from orchestrator.failpoints import Failpoints
from orchestrator.logbuffer import LogBuffer
from orchestrator.recovery import Recovery
from orchestrator.saga import SIGNUP_STEPS
from orchestrator.store import SagaStore, metadata

UI = Path(__file__).resolve().parent.parent / "ui"


def create_app(overrides: dict[str, Any] | None = None) -> Flask:
    """The orchestrator app; starts its recovery loop unless RECOVERY_ENABLED is off."""
    app = base_app("orchestrator", orchestrator_config(overrides),
                   template_folder=str(UI / "templates"), static_folder=str(UI / "static"))
    logs = LogBuffer()
    logging.getLogger("orchestrator").addHandler(logs)

    engine = make_engine(app.config["DATABASE_URL"], app.config["DB_POOL_SIZE"])
    init_database(engine, metadata)
    store = SagaStore(engine, app.config["LEASE_SECONDS"])
    client = ParticipantClient(app.config["CALL_TIMEOUT"], app.config["RETRY_BACKOFF"],
                               app.config["RETRY_BACKOFF_MAX"])
    executor = ThreadPoolExecutor(app.config["WORKER_THREADS"], thread_name_prefix="saga")
    saga_engine = SagaEngine(SIGNUP_STEPS, app.config["SERVICE_URLS"], store, client,
                             owner=app.config["ORCHESTRATOR_ID"],
                             invoke_retries=app.config["CALL_RETRIES"],
                             compensation_retries=app.config["COMPENSATION_RETRIES"],
                             failpoints=Failpoints(app.config["FAILPOINTS_FILE"]),
                             background=executor)
    recovery = Recovery(saga_engine, app.config["RECOVERY_INTERVAL"],
                        app.config["COMPENSATION_RETRY_AFTER"], app.config["COMPENSATION_RETRY_ROUNDS"])
    app.extensions["saga"] = {"engine": saga_engine, "store": store, "client": client,
                              "recovery": recovery, "logs": logs}
    app.register_blueprint(api)
    if app.config["RECOVERY_ENABLED"]:
        recovery.start()
    return app
