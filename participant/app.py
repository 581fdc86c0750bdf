"""The Flask app every participant runs, built from its `ServiceSpec`."""

from __future__ import annotations

import threading
from typing import Any

from flask import Flask
from sqlalchemy import MetaData

from common.db import init_database, make_engine
from common.web import base_app, serve_openapi
from participant.choreography import ParticipantChoreography, choreography_tables
from participant.choreography_api import choreography_routes
from participant.config import participant_config
from participant.records import RecordStore, mark_choreographed_rows, records_table
from participant.routes import ParticipantFlask, routes
from participant.spec import ServiceSpec


def create_participant_app(spec: ServiceSpec, overrides: dict[str, Any] | None = None) -> Flask:
    """A participant app for `spec`, its table created if missing."""
    app = base_app(f"service_{spec.name}", participant_config(spec, overrides),
                   app_class=ParticipantFlask)
    assert isinstance(app, ParticipantFlask)
    engine = make_engine(app.config["DATABASE_URL"], app.config["DB_POOL_SIZE"], app.config["DB_TIMEOUT"])
    metadata = MetaData()
    table = records_table(metadata, spec.table, spec.column)
    choreography_tables(metadata)
    init_database(engine, metadata, {f"{spec.table}.model": lambda c: mark_choreographed_rows(c, table)})
    app.spec = spec
    app.records = RecordStore(engine, table, spec.column)
    app.fault_sleeps = threading.BoundedSemaphore(app.config["FAULT_SLEEP_SLOTS"])
    app.choreography = ParticipantChoreography(spec, app.config, app.records, metadata, app.fault_sleeps)
    app.register_blueprint(routes)
    app.register_blueprint(choreography_routes)
    serve_openapi(app, "participant")
    app.choreography.start()
    return app
