"""The compose observability profile, checked as far as this machine can without a Docker engine:
the Prometheus file by promtool, the Grafana dashboard's queries against live /metrics."""

from __future__ import annotations

import json
import re
import subprocess

import requests
import yaml
from prometheus_client.parser import text_string_to_metric_families

from scripts.stack import PROCESSES, ROOT, Stack

OPS = ROOT / "ops"


def test_promtool_accepts_the_prometheus_file() -> None:
    checked = subprocess.run(["promtool", "check", "config", str(OPS / "prometheus" / "prometheus.yml")],
                             capture_output=True, text=True, timeout=60)
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_prometheus_scrapes_the_four_processes_where_compose_runs_them() -> None:
    config = yaml.safe_load((OPS / "prometheus" / "prometheus.yml").read_text())
    groups = [group for job in config["scrape_configs"] for group in job["static_configs"]]
    targets = {target for group in groups for target in group["targets"]}
    assert targets == {"orchestrator:5000", "service-a:5001", "service-b:5002", "service-c:5003"}


def exposed(stack: Stack) -> set[str]:
    names = set()
    for process in PROCESSES:
        text = requests.get(f"{stack.urls[process]}/metrics", timeout=5).text
        names |= {family.name for family in text_string_to_metric_families(text)}
    return names


def test_every_metric_the_grafana_dashboard_queries_exists(stack: Stack) -> None:
    dashboard = json.loads((OPS / "grafana" / "dashboards" / "sagas.json").read_text())
    queries = [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]
    titles = " ".join(panel["title"].lower() for panel in dashboard["panels"])
    for wanted in ("per second", "p50", "retries", "compensations", "failed compensations"):
        assert wanted in titles, wanted
    used = {re.sub(r"(_bucket|_count|_sum|_total)$", "", name)
            for query in queries for name in re.findall(r"\bsaga_[a-z_]+", query)}
    assert used, "the dashboard queries saga metrics"
    missing = used - exposed(stack)
    assert missing == set(), f"queried but not exposed: {missing}"


def test_grafana_is_provisioned_with_both_data_sources() -> None:
    provisioning = OPS / "grafana" / "provisioning"
    sources = yaml.safe_load((provisioning / "datasources" / "datasources.yml").read_text())
    assert {(s["type"], s["url"]) for s in sources["datasources"]} == {
        ("prometheus", "http://prometheus:9090"), ("jaeger", "http://jaeger:16686")}
    providers = yaml.safe_load((provisioning / "dashboards" / "dashboards.yml").read_text())
    assert providers["providers"][0]["options"]["path"] == "/var/lib/grafana/dashboards"
