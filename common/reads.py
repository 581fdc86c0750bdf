"""The read endpoints both models serve alike, over a `SagaSource`: the newest sagas, and a
saga's rows with whether they agree with how it ended. (Each model serves one saga, with its
story, itself: the orchestrator's log and the observer's events are told differently.)"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from flask import Blueprint, jsonify, request

from common.consistency import RowReader, SagaSource, Unreachable, verdict
from common.errors import ApiError
from common.status import Model, SagaStatus
from common.validation import limit_arg, reject_unknown

NOUN = {Model.ORCHESTRATION: "saga", Model.CHOREOGRAPHY: "choreographed saga"}


def status_arg() -> SagaStatus | None:
    """`?status=`, one of the saga statuses, or 400."""
    status = request.args.get("status")
    if status is not None and status not in SagaStatus.__members__:
        raise ApiError(400, "invalid_status", f"status must be one of {', '.join(SagaStatus.__members__)}")
    return SagaStatus(status) if status else None


def saga_reads(name: str, url_prefix: str, source: Callable[[], SagaSource],
               rows: Callable[[], RowReader]) -> Blueprint:
    """GET <prefix>/sagas and GET <prefix>/sagas/<id>/records over the source `source()` gives."""
    api = Blueprint(name, __name__, url_prefix=url_prefix)

    @api.get("/sagas")
    def list_sagas() -> Any:
        """The newest sagas first; `?limit=`, `?status=`."""
        reject_unknown(request.args, ("limit", "status"), what="query_argument")
        return jsonify({"sagas": source().recent(limit_arg(request.args), status_arg())})

    @api.get("/sagas/<saga_id>/records")
    def saga_records(saga_id: str) -> Any:
        """The rows the saga's participants hold for it, fetched from them, and whether they agree."""
        found = source()
        saga = found.snapshot(saga_id)
        if saga is None:
            raise ApiError(404, "not_found", f"no {NOUN[found.model]} {saga_id}")
        held: dict[str, Any] = {}
        try:
            for part in saga.parts:
                held[part.step] = rows().record(part.participant, saga_id)
        except Unreachable as error:
            return jsonify({"saga_id": saga_id, "rows": held, "verdict": "unknown",
                            "problems": [f"a service did not answer ({error})"]})
        statuses = {step: (row or {}).get("status") for step, row in held.items()}
        outcome, problems = verdict(saga.status, statuses, found.model)
        return jsonify({"saga_id": saga_id, "rows": held, "verdict": outcome, "problems": problems})

    return api
