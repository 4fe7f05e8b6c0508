"""Grafana dashboard, Prometheus config and alert rules."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
import yaml

from tests.infra.tools import INFRA, ROOT, find_tool, run

#: The gateway's metric names (gateway/metrics implements exactly these).
GATEWAY_METRICS = {
    "tollway_requests_total",
    "tollway_request_duration_seconds",
    "tollway_time_to_first_token_seconds",
    "tollway_tokens_total",
    "tollway_cost_usd_total",
    "tollway_compression_tokens_saved_total",
    "tollway_pool_queue_depth",
    "tollway_pool_queue_wait_seconds",
    "tollway_admission_total",
    "tollway_worker_in_flight",
    "tollway_worker_kv_projected_ratio",
    "tollway_circuit_state",
    "tollway_redis_errors_total",
    "tollway_database_errors_total",
    "tollway_usage_buffer_depth",
    "tollway_ledger_lag_seconds",
}
HISTOGRAMS = {
    "tollway_request_duration_seconds",
    "tollway_time_to_first_token_seconds",
    "tollway_pool_queue_wait_seconds",
}
DASHBOARD = INFRA / "grafana" / "tollway-dashboard.json"
ALERTS = INFRA / "prometheus" / "alerts.yml"
OPERATIONS = ROOT / "docs" / "operations.md"


def metrics_in(expr: str) -> set[str]:
    """Tollway metric names an expression uses (histogram series mapped to their metric)."""
    names = set()
    for name in re.findall(r"\btollway_[a-z_]+", expr):
        base = re.sub(r"_(bucket|sum|count)$", "", name)
        if base in HISTOGRAMS:
            assert name != base, f"{name} is a histogram: use _bucket, _sum or _count"
            name = base
        names.add(name)
    return names


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    return data


def _panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    return [p for p in dashboard["panels"] if p["type"] != "row"]


def test_dashboard_uses_only_the_gateway_metrics_and_covers_them(dashboard: dict[str, Any]) -> None:
    used: set[str] = set()
    for panel in _panels(dashboard):
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            names = metrics_in(target["expr"])
            assert names <= GATEWAY_METRICS, (panel["title"], names - GATEWAY_METRICS)
            used |= names
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            assert metrics_in(variable["query"]["query"]) <= GATEWAY_METRICS
    assert used == GATEWAY_METRICS


def test_dashboard_layout_is_well_formed(dashboard: dict[str, Any]) -> None:
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    assert dashboard["uid"] == "tollway-overview"
    for panel in dashboard["panels"]:
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24
    for panel in _panels(dashboard):
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
    labels = {"route", "model", "agent_type", "status", "kind", "pool", "worker", "outcome"}
    grouped = set()
    for panel in _panels(dashboard):
        for target in panel["targets"]:
            for group in re.findall(r"by \(([^)]*)\)", target["expr"]):
                grouped |= {g.strip() for g in group.split(",")}
    assert labels <= grouped | {"le"}


@pytest.fixture(scope="module")
def alerts() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(ALERTS.read_text(encoding="utf-8"))
    return data


def _rules(alerts: dict[str, Any]) -> list[dict[str, Any]]:
    return [rule for group in alerts["groups"] for rule in group["rules"]]


def test_alert_rules_use_gateway_metrics_and_link_their_runbook(alerts: dict[str, Any]) -> None:
    names = {rule["alert"] for rule in _rules(alerts)}
    required = {
        "TollwayHighErrorRate",
        "TollwayHighShedRate",
        "TollwayLedgerLag",
        "TollwayCircuitOpen",
    }
    assert required <= names
    operations = OPERATIONS.read_text(encoding="utf-8")
    headings = {
        re.sub(r"[^a-z0-9 -]", "", line.lstrip("#").strip().lower()).replace(" ", "-")
        for line in operations.splitlines()
        if line.startswith("#")
    }
    for rule in _rules(alerts):
        assert metrics_in(rule["expr"]) and metrics_in(rule["expr"]) <= GATEWAY_METRICS
        assert rule["labels"]["severity"] in ("page", "ticket")
        assert {"summary", "description", "runbook"} <= set(rule["annotations"])
        anchor = rule["annotations"]["runbook"].split("#", 1)[1]
        assert anchor == rule["alert"].lower() and anchor in headings, anchor


def test_promtool_accepts_the_rules_and_the_config(tmp_path: Any) -> None:
    promtool = find_tool("promtool")
    if promtool is None:
        pytest.skip("promtool is not installed (Debian: prometheus)")
    result = run([promtool, "check", "rules", str(ALERTS)])
    assert result.returncode == 0, result.stdout + result.stderr
    # Unit tests: the alerts fire (and stay quiet) on synthetic series.
    result = run([promtool, "test", "rules", "alerts.test.yml"], cwd=ALERTS.parent)
    assert result.returncode == 0, result.stdout + result.stderr
    # The config names the rules by their path inside the container.
    config = (INFRA / "prometheus" / "prometheus.yml").read_text(encoding="utf-8")
    local = tmp_path / "prometheus.yml"
    local.write_text(config.replace("/etc/prometheus/alerts.yml", str(ALERTS)), encoding="utf-8")
    result = run([promtool, "check", "config", str(local)])
    assert result.returncode == 0, result.stdout + result.stderr


def test_prometheus_config_scrapes_the_gateway_and_loads_the_rules() -> None:
    config = yaml.safe_load((INFRA / "prometheus" / "prometheus.yml").read_text(encoding="utf-8"))
    assert config["rule_files"] == ["/etc/prometheus/alerts.yml"]
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert jobs["tollway-gateway"]["static_configs"][0]["targets"] == ["gateway:8000"]
    for static in jobs["sglang"]["static_configs"]:
        assert {"pool", "pod"} <= set(static["labels"])


def test_grafana_provisioning_points_at_the_mounted_dashboard() -> None:
    provisioning = INFRA / "grafana" / "provisioning"
    datasources = yaml.safe_load((provisioning / "datasources" / "prometheus.yml").read_text())
    assert datasources["datasources"][0]["url"] == "http://prometheus:9090"
    providers = yaml.safe_load((provisioning / "dashboards" / "tollway.yml").read_text())
    assert providers["providers"][0]["options"]["path"] == "/var/lib/grafana/dashboards"
