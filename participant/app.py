"""The Flask app every participant runs, built from its entry in the saga's declaration."""

from __future__ import annotations

from typing import Any

from flask import Flask
from sqlalchemy import MetaData

from choreography.api import choreography_routes
from choreography.flow import Flows
from choreography.service import ChoreographedService, choreography_tables
from common.db import make_engine
from common.faults import Sleeps
from common.schema import init_database
from common.web import base_app, keep, serve_openapi
from participant.config import participant_config
from participant.records import RecordStore, claim_live_values, mark_choreographed_rows, records_table
from participant.routes import Participant, routes


def create_participant_app(name: str, overrides: dict[str, Any] | None = None) -> Flask:
    """The app of participant `name` (a service of the saga's declaration), its tables created
    if missing."""
    spec, config = participant_config(name, overrides)
    app = base_app(f"service_{spec.name}", config)
    engine = make_engine(config["DATABASE_URL"], config["DB_POOL_SIZE"], config["DB_TIMEOUT"])
    metadata = MetaData()
    table = records_table(metadata, spec.table, spec.column, unique=spec.unique)
    choreography_tables(metadata)
    init_database(engine, metadata, {  # what an older version's rows lack, filled in once
        f"{spec.table}.model": lambda c: mark_choreographed_rows(c, table),
        f"{spec.table}.claim": lambda c: claim_live_values(c, table, spec.column)})
    records = RecordStore(engine, table, spec.column, spec.field)
    sleeps = Sleeps(config["FAULT_SLEEP_SLOTS"])
    flows = Flows.of(config["DECLARATION"], config["DEFINITIONS"])
    choreography = ChoreographedService(spec, flows, config, records, metadata, sleeps)
    locks = any(spec.name in flow.locks for flow in flows.known.values())  # a step of its holds one
    keep(app, Participant(spec, records, sleeps, locks))
    keep(app, choreography)
    app.register_blueprint(routes)
    app.register_blueprint(choreography_routes)
    serve_openapi(app, "participant")
    choreography.start()
    return app
