"""POST /labs/isolation: the isolation lab's race, run on the live services (orchestrator/lab.py)."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, jsonify

from common.errors import ApiError, json_object
from common.status import Isolation, Model
from common.validation import choice_field, reject_unknown
from orchestrator.lab import LabBusy, LabFailed
from orchestrator.services import services

labs_api = Blueprint("labs", __name__)


@labs_api.post("/labs/isolation")
def isolation_lab() -> tuple[Any, int]:
    """Two sign-ups for one fresh username, the first slow at its last step and failing there,
    the second started while the first holds the username: `{"model", "countermeasure"}` in;
    when both have ended, what each came to and whether the anomaly happened. One run at a time
    (409 `lab_busy`). Open like /start (it starts two sagas; its fault is bounded and its own)."""
    body = json_object()
    reject_unknown(body, ("model", "countermeasure"))
    model = choice_field(body, "model", Model)
    if model is None:
        raise ApiError(400, "invalid_field", f"'model' must be one of {', '.join(Model)}")
    countermeasure = choice_field(body, "countermeasure", Isolation) or Isolation.NONE
    try:
        return jsonify(services().lab.run(model, countermeasure)), 200
    except LabBusy as busy:
        raise ApiError(409, "lab_busy", str(busy), headers={"Retry-After": "5"}) from None
    except LabFailed as failed:
        raise ApiError(503, "lab_failed", str(failed), headers={"Retry-After": "5"}) from None
