"""The consistency check from the command line: `python -m orchestrator.check` (or `make check`).

Reads the saga log and the choreography observer's sagas, a page at a time, and asks the
participants for their rows, with the same settings as the orchestrator (environment variables
and `.env`); prints the report and exits 1 on any violation, 2 if a participant could not be read.
"""

from __future__ import annotations

import json
import sys

from choreography.flow import Flows
from common.consistency import SagaSource, check_everything
from common.db import make_engine
from common.declaration import Definitions
from common.settings import MIN_SECRET_LENGTH
from observer.consistency import ChoreographedSagas
from observer.observer import Observer
from orchestrator.client import ParticipantClient
from orchestrator.config import orchestrator_config
from orchestrator.gateway import ParticipantGateway
from orchestrator.sources import OrchestratedSagas
from orchestrator.store import SagaStore


def main() -> int:
    # The check only reads (GET /records): it signs nothing, so it needs no SERVICE_SECRET.
    config = orchestrator_config({"SERVICE_SECRET": "-" * MIN_SECRET_LENGTH})
    definitions: Definitions = config["DEFINITIONS"]
    database = make_engine(config["DATABASE_URL"], timeout=config["DB_TIMEOUT"])
    store = SagaStore(database, config["LEASE_SECONDS"])
    fields = {step.participant: step.receives for step in definitions.default.steps}
    gateway = ParticipantGateway(ParticipantClient(config["SERVICE_SECRET"]), config["SERVICE_URLS"],
                                 fields)
    flows = Flows.of(config["DECLARATION"], definitions)
    sources: list[SagaSource] = [
        OrchestratedSagas(store, definitions),
        ChoreographedSagas(Observer(database, flows),
                           lambda saga_id: gateway.knows_signup(flows.default.entry, saga_id),
                           config["CHOREOGRAPHY_STUCK_AFTER"])]
    report = check_everything(sources, gateway, lock_attention_after=config["LOCK_ATTENTION_AFTER"])
    print(json.dumps(report, indent=2))
    if not report["complete"]:
        print("incomplete: a service could not be read", file=sys.stderr)
        return 2
    print(f"{report['checked']} finished sagas checked, {len(report['violations'])} violation(s), "
          f"{len(report['needs_attention'])} needing attention, {report['in_progress']} in progress",
          file=sys.stderr)
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
