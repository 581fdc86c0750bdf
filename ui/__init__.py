"""The dashboard: one page and its script, served by the orchestrator's process."""

from __future__ import annotations

from flask import Blueprint, render_template, send_from_directory
from werkzeug.wrappers import Response

dashboard = Blueprint("dashboard", __name__, template_folder="templates",
                      static_folder="static", static_url_path="/static")


@dashboard.get("/")
def index() -> str:
    """The dashboard page; everything on it comes from the JSON API."""
    return render_template("index.html")


@dashboard.get("/labs/isolation")
def isolation_lab() -> str:
    """The isolation lab's page (its race runs at POST /labs/isolation)."""
    return render_template("isolation.html")


@dashboard.get("/favicon.ico")
def favicon() -> Response:
    """The icon browsers ask for at this path (the page also links it)."""
    assert dashboard.static_folder is not None
    return send_from_directory(dashboard.static_folder, "favicon.svg", mimetype="image/svg+xml",
                               max_age=86400)
