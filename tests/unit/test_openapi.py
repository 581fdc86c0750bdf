"""The OpenAPI descriptions against the apps they describe, in-process: every route described with its
methods and nothing described that is not served, valid OpenAPI 3.1, served as JSON at /openapi.json,
and the answers every operation shares (403, 413, 415, 401, Retry-After) described where they happen."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml
from flask import Flask
from openapi_spec_validator import validate
from werkzeug.routing import Rule

import service_a
import service_b
import service_c
from orchestrator.app import create_app as create_orchestrator
from orchestrator.services import Services
from participant.routes import Participant

ROOT = Path(__file__).resolve().parents[2]
DOCUMENTS = {"orchestrator": ROOT / "orchestrator" / "openapi.yaml",
             "participant": ROOT / "participant" / "openapi.yaml"}
APPS: dict[str, tuple[str, Callable[[dict[str, Any]], Flask]]] = {
    "orchestrator": ("orchestrator", create_orchestrator),
    "a": ("participant", service_a.create_app),
    "b": ("participant", service_b.create_app),
    "c": ("participant", service_c.create_app),
}
HTTP_METHODS = {"get", "put", "post", "delete", "options", "head", "patch", "trace"}
IMPLICIT = {"HEAD", "OPTIONS"}  # Flask answers these on every rule; the descriptions leave them out
JSON_BODY_ERRORS = {"400", "413", "415"}  # json_object()'s answers


@cache
def document(kind: str) -> dict[str, Any]:
    """The YAML file, as loaded (once: the tests only read it)."""
    loaded: dict[str, Any] = yaml.load(DOCUMENTS[kind].read_text(encoding="utf-8"), Loader=yaml.CSafeLoader)
    return loaded


def operations(kind: str) -> Iterator[tuple[str, str, dict[str, Any]]]:
    """(path, method, operation) for every operation the document describes."""
    for path, item in document(kind)["paths"].items():
        for method, operation in item.items():
            if method in HTTP_METHODS:
                yield path, method, operation


def openapi_path(rule: Rule) -> str:
    """A Flask rule as an OpenAPI path: `/sagas/<saga_id>` -> `/sagas/{saga_id}`."""
    return re.sub(r"<(?:[^<>:]+:)?([^<>]+)>", r"{\1}", rule.rule)


def served(app: Flask) -> dict[str, set[str]]:
    """Every path the app serves (static files aside), with its methods in lower case."""
    found: dict[str, set[str]] = {}
    for rule in app.url_map.iter_rules():
        if rule.endpoint.split(".")[-1] == "static":
            continue
        methods = (rule.methods or set()) - IMPLICIT
        found.setdefault(openapi_path(rule), set()).update(method.lower() for method in methods)
    return found


def described(kind: str) -> dict[str, set[str]]:
    """Every path the document describes, with its methods."""
    found: dict[str, set[str]] = {}
    for path, method, _ in operations(kind):
        found.setdefault(path, set()).add(method)
    return found


@pytest.fixture(params=list(APPS))
def app(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, Flask]]:
    """Each process's app on a SQLite file of its own: (the kind of document it serves, the app)."""
    kind, create = APPS[request.param]
    built = create({"DATABASE_URL": f"sqlite:///{tmp_path / 'app.db'}", "RECOVERY_ENABLED": False,
                    "SERVICE_SECRET": "s" * 32, "FAULTS_ENABLED": False})
    yield kind, built
    owner = built.extensions.get("Services") or built.extensions["Participant"]
    assert isinstance(owner, Services | Participant)
    (owner.store if isinstance(owner, Services) else owner.records).engine.dispose()


def test_every_route_is_described_with_its_methods_and_nothing_else(app: tuple[str, Flask]) -> None:
    kind, flask_app = app
    routes, paths = served(flask_app), described(kind)
    assert set(routes) - set(paths) == set(), f"routes missing from {DOCUMENTS[kind].name}"
    assert set(paths) - set(routes) == set(), f"{DOCUMENTS[kind].name} describes paths nobody serves"
    for path, methods in routes.items():
        assert paths[path] == methods, f"{path}: served {sorted(methods)}, described {sorted(paths[path])}"


def test_the_document_is_served_as_json(app: tuple[str, Flask]) -> None:
    kind, flask_app = app
    answer = flask_app.test_client().get("/openapi.json")
    assert answer.status_code == 200
    assert answer.mimetype == "application/json"
    assert answer.get_json() == document(kind), "/openapi.json is not the YAML file"


def test_unsigned_posts_are_refused_exactly_where_a_signature_is_described(app: tuple[str, Flask]) -> None:
    """A POST without X-Saga-Signature answers 401 where the operation names the security scheme, and
    gets past the signature check (to a 400 or 404 here) everywhere else."""
    kind, flask_app = app
    client = flask_app.test_client()
    for path, method, operation in operations(kind):
        if method != "post":
            continue
        answer = client.post(path.replace("{saga_id}", "no-such-saga"), data=b"[]",
                             content_type="application/json")
        signed = "security" in operation
        assert (answer.status_code == 401) == signed, f"POST {path}: {answer.status_code} {answer.get_json()}"
        assert str(answer.status_code) in operation["responses"], f"POST {path}: {answer.status_code}"


@pytest.mark.parametrize("kind", list(DOCUMENTS))
def test_the_document_is_valid_openapi_3_1(kind: str) -> None:
    spec = document(kind)
    assert spec["openapi"].startswith("3.1.")
    validate(spec)


@pytest.mark.parametrize("kind", list(DOCUMENTS))
def test_every_write_describes_the_boundary_answers(kind: str) -> None:
    """Every POST can be refused as a cross-site write (403); every one that reads a JSON body can
    answer 400, 413 and 415; every signed one 401."""
    for path, method, operation in operations(kind):
        codes = set(operation["responses"])
        if method == "post":
            assert "403" in codes, f"POST {path} does not describe the cross-site 403"
        if "requestBody" in operation:
            assert codes >= JSON_BODY_ERRORS, f"{method.upper()} {path} lacks {JSON_BODY_ERRORS - codes}"
        if "security" in operation:
            assert "401" in codes, f"{method.upper()} {path} is signed but does not describe 401"


@pytest.mark.parametrize("kind", list(DOCUMENTS))
def test_every_503_says_when_to_try_again(kind: str) -> None:
    spec = document(kind)
    for path, method, operation in operations(kind):
        answer = operation["responses"].get("503")
        if answer is None:
            continue
        if "$ref" in answer:
            answer = spec["components"]["responses"][answer["$ref"].rsplit("/", 1)[-1]]
        assert "Retry-After" in answer.get("headers", {}), f"{method.upper()} {path}: 503 without Retry-After"


@pytest.mark.parametrize("kind", list(DOCUMENTS))
def test_errors_share_the_one_error_shape(kind: str) -> None:
    """Every error answer described in `components` is the JSON error shape."""
    spec = document(kind)
    error = spec["components"]["schemas"]["Error"]
    assert error["required"] == ["error"]
    assert error["properties"]["error"]["required"] == ["code", "message"]
    for name, response in spec["components"]["responses"].items():
        schema = response.get("content", {}).get("application/json", {}).get("schema")
        assert schema == {"$ref": "#/components/schemas/Error"}, f"{name} is not the error shape"
