"""The orchestrator's HTTP API: its blueprints and the JSON shapes they answer with."""

from orchestrator.api.labs import labs_api
from orchestrator.api.operations import operations_api
from orchestrator.api.sagas import sagas_api

BLUEPRINTS = (sagas_api, operations_api, labs_api)
