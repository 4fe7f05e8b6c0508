"""A pool's Kubernetes objects, rendered from its ``PoolConfig``.

:func:`render_pool_manifest` renders the pool as a headless Service and a
StatefulSet with one pod per worker, each running the command line of
:mod:`backends.sglang.launch`. Pod ``i`` of the StatefulSet ``name`` answers at
``http://<name>-<i>.<name>:30000``, which is exactly what the pool's ``workers``
list names (:func:`worker_url_problems` says when it does not).

``emulated=True`` renders the same pool with Tollway's SGLang emulator
(``tollway emulate``) in place of SGLang: no GPU, same names and ports, for
development clusters. :func:`render_pool_scaled_object` renders the optional
KEDA autoscaler of a pool.
"""

from __future__ import annotations

import math
import re
from typing import Any
from urllib.parse import urlsplit

from backends.sglang.config import PoolConfig
from backends.sglang.launch import SGLANG_PORT, LaunchOptions, emulate_command, launch_command
from gpu_catalog.capacity import weights_bytes_per_gpu
from gpu_catalog.specs import get_model
from tollway.errors import ConfigError

#: The pool image built from ``infra/pool/Dockerfile`` (SGLang's published image, pinned).
DEFAULT_POOL_IMAGE = "tollway/sglang-pool:0.5.6.post1"
#: The gateway image (its ``tollway emulate`` command runs emulated workers).
DEFAULT_GATEWAY_IMAGE = "tollway/gateway:0.1.0"
#: Values of the ``nvidia.com/gpu.product`` node label (NVIDIA GPU feature discovery).
GPU_PRODUCTS = {
    "h100": "NVIDIA-H100-80GB-HBM3",
    "h200": "NVIDIA-H200",
    "a100": "NVIDIA-A100-SXM4-80GB",
    "l4": "NVIDIA-L4",
}
# StatefulSet names end up in the controller-revision-hash label (63 characters
# with an 11-character suffix), hence 52.
_K8S_NAME = re.compile(r"^[a-z]([-a-z0-9]{0,50}[a-z0-9])?$")
_SHM_SIZE = "16Gi"
_PART_OF = "tollway"
#: Kubernetes probe timeout in seconds: SGLang's /health takes about 1 s (see
#: ``backends.sglang.config.HealthConfig``), a few behind a long prefill.
PROBE_TIMEOUT_S = 5
#: The default launch options (frozen, so one instance serves every call).
_NO_OPTIONS = LaunchOptions()


def expected_worker_urls(name: str, replicas: int) -> list[str]:
    """Worker URLs of the StatefulSet ``name`` (namespace-relative DNS names)."""
    return [f"http://{name}-{i}.{name}:{SGLANG_PORT}" for i in range(replicas)]


def worker_url_problems(config: PoolConfig, name: str) -> list[str]:
    """Why the pool's ``workers`` do not name the pods of StatefulSet ``name`` (empty: they do).

    A worker may add the namespace (``<pod>.<name>.<namespace>.svc[.cluster.local]``).
    """
    problems = []
    for i, url in enumerate(config.workers):
        parts = urlsplit(url)
        host, port = parts.hostname or "", parts.port
        expected = f"{name}-{i}.{name}"
        if host != expected and not host.startswith(expected + "."):
            problems.append(f"workers[{i}] is {url}; pod {i} of '{name}' is {expected}")
        elif port != SGLANG_PORT:
            problems.append(f"workers[{i}] is {url}; the workers listen on port {SGLANG_PORT}")
    return problems


def _check_name(name: str) -> None:
    if not _K8S_NAME.match(name):
        raise ConfigError(
            f"{name!r} is not a Kubernetes name (lowercase letters, digits and '-', "
            "starting with a letter, at most 52 characters)",
            path="name",
        )


def _labels(name: str) -> dict[str, str]:
    return {
        "app.kubernetes.io/name": "sglang",
        "app.kubernetes.io/instance": name,
        "app.kubernetes.io/component": "pool",
        "app.kubernetes.io/part-of": _PART_OF,
    }


def _selector(name: str) -> dict[str, str]:
    return {"app.kubernetes.io/name": "sglang", "app.kubernetes.io/instance": name}


def _cache_size_gi(config: PoolConfig) -> int:
    """Disk for the Hugging Face cache: the bf16 checkpoint plus a quarter, in GiB."""
    total = weights_bytes_per_gpu(get_model(config.model.name), "bf16", 1)
    return max(20, math.ceil(total * 1.25 / 2**30 / 10) * 10)


def _probe(path: str, period: int, timeout: int, failures: int) -> dict[str, Any]:
    return {
        "httpGet": {"path": path, "port": "http"},
        "periodSeconds": period,
        "timeoutSeconds": timeout,
        "failureThreshold": failures,
    }


def _container(config: PoolConfig, image: str, options: LaunchOptions, emulated: bool) -> Any:
    tp = config.model.tp
    health = config.health.path
    container: dict[str, Any] = {
        "name": "sglang",
        "image": image,
        "command": emulate_command(config, options)
        if emulated
        else launch_command(config, options),
        "ports": [{"name": "http", "containerPort": SGLANG_PORT, "protocol": "TCP"}],
    }
    if emulated:
        container["resources"] = {
            "requests": {"cpu": "250m", "memory": "256Mi"},
            "limits": {"memory": "512Mi"},
        }
    else:
        container["env"] = [
            {"name": "HF_HOME", "value": "/models/huggingface"},
            # What the gateway's health checks and these probes rely on: /health
            # runs a one-token generation (SGLang's default, pinned here).
            {"name": "SGLANG_ENABLE_HEALTH_ENDPOINT_GENERATION", "value": "true"},
            {
                "name": "HF_TOKEN",
                "valueFrom": {
                    "secretKeyRef": {
                        "name": "tollway-pool-secrets",
                        "key": "HF_TOKEN",
                        "optional": True,
                    }
                },
            },
        ]
        container["resources"] = {
            "requests": {"cpu": str(8 * tp), "memory": f"{64 * tp}Gi", "nvidia.com/gpu": tp},
            "limits": {"memory": f"{96 * tp}Gi", "nvidia.com/gpu": tp},
        }
        container["volumeMounts"] = [
            {"name": "dshm", "mountPath": "/dev/shm"},
            {"name": "model-cache", "mountPath": "/models"},
        ]
    # Model download and CUDA-graph capture take minutes (/health answers 503
    # meanwhile): the startup probe allows 30, then readiness and liveness take
    # over. SGLang's /health answers after a one-token generation and a 1 s
    # wait, so no probe times out under PROBE_TIMEOUT_S.
    container["startupProbe"] = _probe(health, 10, PROBE_TIMEOUT_S, 4 if emulated else 180)
    container["readinessProbe"] = _probe(health, 5, PROBE_TIMEOUT_S, 3)
    container["livenessProbe"] = _probe(health, 15, 2 * PROBE_TIMEOUT_S, 6)
    container["securityContext"] = {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": emulated,
        "capabilities": {"drop": ["ALL"]},
    }
    return container


def render_pool_manifest(
    config: PoolConfig,
    name: str,
    *,
    pool_name: str | None = None,
    image: str | None = None,
    options: LaunchOptions = _NO_OPTIONS,
    replicas: int | None = None,
    emulated: bool = False,
) -> list[dict[str, Any]]:
    """The pool's headless Service and StatefulSet (one pod per worker).

    ``name`` is the Kubernetes name (also the workers' DNS prefix); ``pool_name``
    the gateway's name of the pool (default ``name``), kept as an annotation.
    ``replicas`` defaults to the number of configured workers.
    """
    _check_name(name)
    count = len(config.workers) if replicas is None else replicas
    labels = _labels(name)
    annotations = {"tollway/pool": pool_name or name, "tollway/gpu": config.gpu}
    pod_spec: dict[str, Any] = {
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": 10001,
            "runAsGroup": 10001,
            "fsGroup": 10001,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "automountServiceAccountToken": False,
        "terminationGracePeriodSeconds": 10 if emulated else 60,
        "containers": [
            _container(
                config,
                image or (DEFAULT_GATEWAY_IMAGE if emulated else DEFAULT_POOL_IMAGE),
                options,
                emulated,
            )
        ],
    }
    claims: list[dict[str, Any]] = []
    if not emulated:
        pod_spec["nodeSelector"] = {"nvidia.com/gpu.product": GPU_PRODUCTS[config.gpu]}
        pod_spec["tolerations"] = [
            {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
        ]
        pod_spec["volumes"] = [
            {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": _SHM_SIZE}}
        ]
        claims = [
            {
                "metadata": {"name": "model-cache"},
                "spec": {
                    "accessModes": ["ReadWriteOnce"],
                    "resources": {"requests": {"storage": f"{_cache_size_gi(config)}Gi"}},
                },
            }
        ]
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "labels": labels, "annotations": annotations},
        "spec": {
            "clusterIP": "None",
            "selector": _selector(name),
            "ports": [{"name": "http", "port": SGLANG_PORT, "targetPort": "http"}],
        },
    }
    statefulset: dict[str, Any] = {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": {"name": name, "labels": labels, "annotations": annotations},
        "spec": {
            "serviceName": name,
            "replicas": count,
            # Workers are independent: start and replace them all at once.
            "podManagementPolicy": "Parallel",
            "updateStrategy": {"type": "RollingUpdate"},
            "selector": {"matchLabels": _selector(name)},
            "template": {
                "metadata": {
                    "labels": labels,
                    "annotations": {
                        **annotations,
                        "prometheus.io/scrape": "true",
                        "prometheus.io/port": str(SGLANG_PORT),
                        "prometheus.io/path": "/metrics",
                    },
                },
                "spec": pod_spec,
            },
        },
    }
    if claims:
        statefulset["spec"]["volumeClaimTemplates"] = claims
    return [service, statefulset]


def render_pool_scaled_object(
    config: PoolConfig,
    name: str,
    *,
    pool_name: str | None = None,
    min_replicas: int = 1,
    queue_per_worker: int = 8,
    kv_usage_target: float = 0.85,
    prometheus: str = "http://prometheus.monitoring.svc:9090",
) -> dict[str, Any]:
    """A KEDA ScaledObject scaling the pool's StatefulSet between ``min_replicas`` and its workers.

    Triggers (Prometheus): the gateway's admission queue for the pool
    (``tollway_pool_queue_depth``), SGLang's own waiting queue
    (``sglang:num_queue_reqs``) and its KV-cache use (``sglang:token_usage``).
    Workers beyond the running replicas fail the gateway's health checks and
    receive nothing, so ``workers`` lists the maximum.
    """
    _check_name(name)
    maximum = len(config.workers)
    if not 0 <= min_replicas <= maximum:
        raise ConfigError(f"min_replicas must be between 0 and {maximum}", path="min_replicas")
    pool = pool_name or name
    pods = f'pod=~"{name}-[0-9]+"'

    def trigger(query: str, threshold: str, metric: str, kind: str) -> dict[str, Any]:
        # AverageValue: replicas = ceil(total / threshold); Value: scale by value / threshold.
        return {
            "type": "prometheus",
            "name": metric,
            "metricType": kind,
            "metadata": {"serverAddress": prometheus, "query": query, "threshold": threshold},
        }

    return {
        "apiVersion": "keda.sh/v1alpha1",
        "kind": "ScaledObject",
        "metadata": {"name": name, "labels": _labels(name), "annotations": {"tollway/pool": pool}},
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "StatefulSet", "name": name},
            "minReplicaCount": min_replicas,
            "maxReplicaCount": maximum,
            "pollingInterval": 15,
            # A new worker takes minutes to load: scale down slowly.
            "cooldownPeriod": 600,
            "triggers": [
                trigger(
                    f'sum(tollway_pool_queue_depth{{pool="{pool}"}})',
                    str(queue_per_worker),
                    "gateway-queue",
                    "AverageValue",
                ),
                trigger(
                    f"sum(sglang:num_queue_reqs{{{pods}}})",
                    str(queue_per_worker),
                    "queue",
                    "AverageValue",
                ),
                trigger(
                    f"avg(sglang:token_usage{{{pods}}})",
                    f"{kv_usage_target:g}",
                    "kv-usage",
                    "Value",
                ),
            ],
        },
    }
