"""Kubernetes manifests: schemas, kustomize builds, and pools rendered from the gateway's config."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from backends.sglang.manifest import expected_worker_urls, worker_url_problems
from gateway.config import load_config
from gateway.manifests_cli import OutputFormat, dump_documents, render_documents, render_header
from tests.infra.tools import (
    CLUSTER_CONFIG,
    CLUSTER_CONFIG_NAME,
    K8S,
    KUBERNETES_VERSION,
    ROOT,
    find_tool,
    load_yaml_documents,
    run,
)

OVERLAYS = ["dev", "prod", "keda"]
KUSTOMIZATIONS = sorted(p.parent for p in K8S.rglob("kustomization.yaml"))
#: Rendered files: directory → (emulated, keda).
RENDERED = {
    K8S / "pools" / "gpu": (False, False),
    K8S / "pools" / "emulated": (True, False),
    K8S / "overlays" / "keda": (False, True),
}
CONFIG = load_config(CLUSTER_CONFIG)


def _kustomization(directory: Path) -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((directory / "kustomization.yaml").read_text())
    return data


@pytest.fixture(scope="module")
def builds() -> dict[str, list[dict[str, Any]]]:
    kubectl = find_tool("kubectl")
    kustomize = find_tool("kustomize")
    if kubectl is None and kustomize is None:
        pytest.skip("neither kubectl nor kustomize is installed to build the overlays")
    out = {}
    for overlay in OVERLAYS:
        path = str(K8S / "overlays" / overlay)
        args = [kustomize, "build", path] if kustomize else [str(kubectl), "kustomize", path]
        result = run([str(a) for a in args])
        assert result.returncode == 0, result.stderr
        out[overlay] = [d for d in yaml.safe_load_all(result.stdout) if d]
    return out


@pytest.mark.parametrize(
    ("directory", "pool"),
    [(d, p) for d in RENDERED for p in sorted(CONFIG.pools)],
    ids=lambda v: str(v.relative_to(K8S)) if isinstance(v, Path) else v,
)
def test_committed_pool_files_equal_a_fresh_render(directory: Path, pool: str) -> None:
    emulated, keda = RENDERED[directory]
    fresh = dump_documents(
        render_documents(CONFIG, pool, emulated=emulated, keda=keda),
        OutputFormat.yaml,
        header=render_header(CLUSTER_CONFIG_NAME, pool, emulated=emulated, keda=keda),
    )
    committed = (directory / f"{pool}.yaml").read_text(encoding="utf-8")
    assert committed == fresh, (
        f"{directory.relative_to(ROOT)}/{pool}.yaml is stale: re-render it with "
        f"`tollway pool-manifest --config {CLUSTER_CONFIG_NAME} --pool {pool}"
        f"{' --emulated' if emulated else ''}{' --keda' if keda else ''}`"
    )
    assert f"{pool}.yaml" in _kustomization(directory)["resources"]


def test_every_pool_worker_is_a_statefulset_pod() -> None:
    for name, pool in CONFIG.pools.items():
        assert worker_url_problems(pool, name) == []
        assert pool.workers == expected_worker_urls(name, len(pool.workers))


@pytest.mark.parametrize("directory", KUSTOMIZATIONS, ids=lambda p: str(p.relative_to(K8S)))
def test_kustomization_paths_exist(directory: Path) -> None:
    data = _kustomization(directory)
    assert data["apiVersion"] == "kustomize.config.k8s.io/v1beta1"
    assert data["kind"] == "Kustomization"
    for resource in data.get("resources", []):
        target = directory / resource
        assert target.is_file() or (target / "kustomization.yaml").is_file(), resource
    for generator in data.get("configMapGenerator", []) + data.get("secretGenerator", []):
        for file in generator.get("files", []):
            assert (directory / file.split("=")[-1]).is_file(), file


def _schema_checked(documents: list[dict[str, Any]]) -> list[str]:
    kv = pytest.importorskip(
        "kubernetes_validate",
        reason="kubernetes-validate is not installed (PyPI, in the dev extra)",
    )
    checked = []
    for doc in documents:
        if doc["apiVersion"].startswith("keda.sh/"):
            continue  # a CRD: checked structurally below
        try:
            kv.validate(doc, KUBERNETES_VERSION, strict=True)
        except kv.ValidationError as exc:
            name = f"{doc['kind']}/{doc['metadata']['name']}"
            pytest.fail(f"{name} fails the Kubernetes {KUBERNETES_VERSION} schema: {exc.message}")
        checked.append(doc["kind"])
    return checked


def test_every_manifest_file_matches_the_kubernetes_schema() -> None:
    documents = []
    for path in sorted(K8S.rglob("*.yaml")):
        if path.name == "kustomization.yaml" or path == CLUSTER_CONFIG:
            continue
        documents += load_yaml_documents(path)
    kinds = _schema_checked(documents)
    assert {"Deployment", "StatefulSet", "Service", "HorizontalPodAutoscaler"} <= set(kinds)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlays_build_and_match_the_kubernetes_schema(
    builds: dict[str, list[dict[str, Any]]], overlay: str
) -> None:
    documents = builds[overlay]
    _schema_checked(documents)
    namespaces = {d["metadata"].get("namespace") for d in documents if d["kind"] != "Namespace"}
    assert len(namespaces) == 1 and None not in namespaces
    kinds = {d["kind"] for d in documents}
    assert {"Deployment", "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget"} <= kinds
    assert {"ConfigMap", "StatefulSet"} <= kinds


def _by_name(documents: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in documents if d["kind"] == kind}


def test_gateway_deployment_is_hardened_and_probed(builds: dict[str, list[dict[str, Any]]]) -> None:
    for overlay, documents in builds.items():
        gateway = _by_name(documents, "Deployment")["tollway-gateway"]
        pod = gateway["spec"]["template"]["spec"]
        (container,) = pod["containers"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert container["securityContext"]["readOnlyRootFilesystem"] is True
        assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
        assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
        assert container["resources"]["requests"] and container["resources"]["limits"]
        env = {e["name"]: e for e in container["env"]}
        for key in ("TOLLWAY_ADMIN_TOKEN", "DATABASE_URL", "REDIS_URL", "STRIPE_API_KEY"):
            assert env[key]["valueFrom"]["secretKeyRef"]["name"].startswith("tollway-secrets")
        # The ConfigMap carries exactly the cluster config the pools are rendered from.
        (config_map,) = [
            d for d in documents if d["kind"] == "ConfigMap" and "tollway.yaml" in d["data"]
        ]
        assert config_map["data"]["tollway.yaml"] == CLUSTER_CONFIG.read_text(encoding="utf-8")
        volume = {v["name"]: v for v in pod["volumes"]}["config"]
        assert volume["configMap"]["name"] == config_map["metadata"]["name"], overlay


def test_dev_generates_secrets_and_prod_expects_them(
    builds: dict[str, list[dict[str, Any]]],
) -> None:
    dev_secrets = {n.rsplit("-", 1)[0] for n in _by_name(builds["dev"], "Secret")}
    assert {"tollway-secrets", "postgres-credentials"} <= dev_secrets
    assert {"redis", "postgres"} <= set(_by_name(builds["dev"], "StatefulSet"))
    assert not _by_name(builds["prod"], "Secret")
    prod_pools = _by_name(builds["prod"], "StatefulSet")
    assert set(prod_pools) == set(CONFIG.pools)
    for pool in prod_pools.values():
        (container,) = pool["spec"]["template"]["spec"]["containers"]
        assert container["image"].startswith("registry.example.com/tollway/sglang-pool:")


def test_keda_scaled_objects_target_the_pool_statefulsets(
    builds: dict[str, list[dict[str, Any]]],
) -> None:
    documents = builds["keda"]
    statefulsets = _by_name(documents, "StatefulSet")
    scaled = _by_name(documents, "ScaledObject")
    assert set(scaled) == set(CONFIG.pools)
    for name, obj in scaled.items():
        spec = obj["spec"]
        assert spec["scaleTargetRef"] == {
            "apiVersion": "apps/v1",
            "kind": "StatefulSet",
            "name": name,
        }
        assert "replicas" not in statefulsets[name]["spec"]  # KEDA owns the count
        assert (
            0
            <= spec["minReplicaCount"]
            <= spec["maxReplicaCount"]
            == len(CONFIG.pools[name].workers)
        )
        for trigger in spec["triggers"]:
            assert trigger["type"] == "prometheus"
            assert trigger["metricType"] in ("AverageValue", "Value")
            assert set(trigger["metadata"]) == {"serverAddress", "query", "threshold"}
            float(trigger["metadata"]["threshold"])
    assert "ScaledObject" not in {d["kind"] for d in builds["prod"]}
