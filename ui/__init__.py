"""The dashboard: one page and its script, served by the orchestrator's process."""

from __future__ import annotations

from flask import Blueprint, render_template

dashboard = Blueprint("dashboard", __name__, template_folder="templates",
                      static_folder="static", static_url_path="/static")


@dashboard.get("/")
def index() -> str:
    """The dashboard page; everything on it comes from the JSON API."""
    return render_template("index.html")
