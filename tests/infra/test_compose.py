"""The local stack (infra/docker-compose.yml) and the cluster config it shares."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from backends.sglang.launch import emulate_command
from backends.sglang.manifest import expected_worker_urls
from gateway.config import load_config
from tests.infra.tools import CLUSTER_CONFIG, INFRA, find_tool, run

COMPOSE = INFRA / "docker-compose.yml"


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))
    return data


def test_services_and_their_dependencies(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert {"gateway", "redis", "postgres", "prometheus", "grafana"} <= set(services)
    gateway = services["gateway"]
    assert gateway["build"] == {"context": "..", "dockerfile": "Dockerfile"}
    for dependency, condition in gateway["depends_on"].items():
        assert dependency in services
        assert condition["condition"] in ("service_healthy", "service_started")
        if condition["condition"] == "service_healthy":
            assert "healthcheck" in services[dependency], dependency
    env = gateway["environment"]
    assert env["DATABASE_URL"].startswith("postgresql+asyncpg://")
    assert env["DATABASE_URL"].split("@")[1].startswith("postgres:5432/")
    assert env["REDIS_URL"] == "redis://redis:6379/0"
    assert "./k8s/base/tollway.yaml:/etc/tollway/tollway.yaml:ro" in gateway["volumes"]


def test_every_configured_worker_is_an_emulated_service(compose: dict[str, Any]) -> None:
    services = compose["services"]
    config = load_config(CLUSTER_CONFIG)
    emulated = {name for name, s in services.items() if s.get("command", [""])[0] == "emulate"}
    expected = set()
    for pool_name, pool in config.pools.items():
        for i, url in enumerate(pool.workers):
            assert url == expected_worker_urls(pool_name, len(pool.workers))[i]
            service = services[f"{pool_name}-{i}"]
            expected.add(f"{pool_name}-{i}")
            # The gateway resolves the same DNS name a StatefulSet pod would have.
            assert service["networks"]["default"]["aliases"] == [f"{pool_name}-{i}.{pool_name}"]
            assert service["command"] == [*emulate_command(pool)[1:], "--speed", "1"]
            assert service["image"] == services["gateway"]["image"]
            assert "30000/health" in " ".join(service["healthcheck"]["test"])
    assert emulated == expected


def test_prometheus_and_grafana_mount_the_shipped_files(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for volume in services["prometheus"]["volumes"] + services["grafana"]["volumes"]:
        source = volume.split(":")[0]
        if source.startswith("./"):
            assert (INFRA / source).exists(), source
    assert "--config.file=/etc/prometheus/prometheus.yml" in services["prometheus"]["command"]


def test_docker_compose_validates_the_file() -> None:
    docker = find_tool("docker")
    if docker is None or run([docker, "compose", "version"]).returncode != 0:
        pytest.skip("the `docker compose` plugin is not installed")
    result = run([docker, "compose", "-f", str(COMPOSE), "config", "--quiet"])
    assert result.returncode == 0, result.stderr
