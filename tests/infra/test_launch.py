"""SGLang launch arguments and pool manifests rendered from a ``PoolConfig``."""

from __future__ import annotations

from typing import Any

import pytest

from backends.sglang.config import PoolConfig
from backends.sglang.launch import (
    FP8_KV_CACHE_DTYPE,
    SGLANG_PORT,
    LaunchOptions,
    emulate_command,
    launch_args,
    tool_call_parser,
)
from backends.sglang.manifest import (
    GPU_PRODUCTS,
    expected_worker_urls,
    render_pool_manifest,
    render_pool_scaled_object,
    worker_url_problems,
)
from gpu_catalog.capacity import default_mem_fraction_static
from gpu_catalog.specs import get_gpu
from tollway.errors import ConfigError


def pool(**model: Any) -> PoolConfig:
    spec = {"name": "llama-3.1-8b-instruct", **model}
    gpu = spec.pop("gpu", "h100")
    workers = spec.pop("workers", expected_worker_urls("p", 2))
    return PoolConfig.model_validate({"gpu": gpu, "model": spec, "workers": workers})


def value(args: list[str], flag: str) -> str:
    assert args.count(flag) == 1, f"{flag} appears {args.count(flag)} times in {args}"
    return args[args.index(flag) + 1]


def test_defaults_render_model_path_served_name_address_and_metrics() -> None:
    args = launch_args(pool())
    assert value(args, "--model-path") == "meta-llama/Llama-3.1-8B-Instruct"
    assert value(args, "--served-model-name") == "llama-3.1-8b-instruct"
    assert value(args, "--host") == "0.0.0.0"
    assert value(args, "--port") == str(SGLANG_PORT)
    assert value(args, "--tp-size") == "1"
    assert value(args, "--kv-cache-dtype") == "auto"
    assert value(args, "--dtype") == "bfloat16"
    assert value(args, "--tool-call-parser") == "llama3"
    assert {"--enable-metrics", "--enable-cache-report"} <= set(args)
    for absent in ("--quantization", "--max-total-tokens", "--enable-priority-scheduling"):
        assert absent not in args


def test_tp_and_mem_fraction_follow_the_pool_and_the_capacity_model() -> None:
    config = pool(name="llama-3.3-70b-instruct", tp=4, gpu="h200")
    args = launch_args(config)
    assert value(args, "--tp-size") == "4"
    expected = default_mem_fraction_static(get_gpu("h200"), 4)
    assert float(value(args, "--mem-fraction-static")) == pytest.approx(expected)
    assert (
        value(launch_args(config, LaunchOptions(mem_fraction_static=0.7)), "--mem-fraction-static")
        == "0.7"
    )


def test_fp8_weights_quantize_and_fp8_kv_uses_e5m2() -> None:
    args = launch_args(pool(weights_dtype="fp8", kv_dtype="fp8"))
    assert value(args, "--quantization") == "fp8"
    assert value(args, "--kv-cache-dtype") == FP8_KV_CACHE_DTYPE == "fp8_e5m2"


def test_served_name_priority_max_tokens_and_extra_args() -> None:
    options = LaunchOptions(
        priority=True, max_total_tokens=200_000, extra_args=("--log-level", "warning")
    )
    args = launch_args(pool(served_name="small"), options)
    assert value(args, "--served-model-name") == "small"
    assert "--enable-priority-scheduling" in args
    assert value(args, "--max-total-tokens") == "200000"
    assert args[-2:] == ["--log-level", "warning"]


@pytest.mark.parametrize(
    ("model", "parser"),
    [
        ("llama-3.1-8b-instruct", "llama3"),
        ("llama-3.3-70b-instruct", "llama3"),
        ("qwen2.5-7b-instruct", "qwen25"),
        ("qwen2.5-72b-instruct", "qwen25"),
        ("mixtral-8x7b-instruct", "mistral"),
        ("llama-2-70b", None),
    ],
)
def test_tool_call_parser_by_family(model: str, parser: str | None) -> None:
    assert tool_call_parser(model) == parser
    args = launch_args(pool(name=model))
    assert ("--tool-call-parser" in args) == (parser is not None)


def test_quantized_integer_weights_need_a_checkpoint() -> None:
    with pytest.raises(ConfigError, match="pre-quantized checkpoint"):
        launch_args(pool(weights_dtype="int4"))
    args = launch_args(pool(weights_dtype="int4"), LaunchOptions(model_path="org/awq-model"))
    assert value(args, "--model-path") == "org/awq-model"
    assert "--quantization" not in args


def test_sixteen_bit_kv_must_match_the_weights_dtype() -> None:
    with pytest.raises(ConfigError, match="KV cache"):
        launch_args(pool(weights_dtype="fp16", kv_dtype="bf16"))
    assert value(launch_args(pool(weights_dtype="fp16", kv_dtype="fp16")), "--dtype") == "float16"


def test_unknown_model_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="unknown model"):
        launch_args(pool(name="no-such-model"))


def _by_kind(docs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {d["kind"]: d for d in docs}


def test_manifest_has_one_pod_per_worker_gpus_shm_probes_and_the_command() -> None:
    config = pool(name="llama-3.3-70b-instruct", weights_dtype="fp8", tp=2, gpu="h200")
    docs = _by_kind(render_pool_manifest(config, "p"))
    service, sts = docs["Service"], docs["StatefulSet"]
    assert service["spec"]["clusterIP"] == "None"
    assert sts["spec"]["serviceName"] == "p"
    assert sts["spec"]["replicas"] == 2
    spec = sts["spec"]["template"]["spec"]
    assert spec["nodeSelector"] == {"nvidia.com/gpu.product": GPU_PRODUCTS["h200"]}
    (container,) = spec["containers"]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 2
    assert container["resources"]["requests"]["nvidia.com/gpu"] == 2
    assert container["command"][:3] == ["python3", "-m", "sglang.launch_server"]
    assert container["command"][3:] == launch_args(config)
    assert {"name": "dshm", "mountPath": "/dev/shm"} in container["volumeMounts"]
    assert {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": "16Gi"}} in spec[
        "volumes"
    ]
    for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
        assert container[probe]["httpGet"] == {"path": "/health", "port": "http"}
    selector = sts["spec"]["selector"]["matchLabels"]
    assert selector.items() <= sts["spec"]["template"]["metadata"]["labels"].items()
    assert service["spec"]["selector"] == selector


def test_manifest_uses_the_pools_health_path_and_replica_override() -> None:
    config = PoolConfig.model_validate(
        {
            "gpu": "h100",
            "model": {"name": "llama-3.1-8b-instruct"},
            "workers": expected_worker_urls("p", 1),
            "health": {"path": "/health_generate"},
        }
    )
    sts = _by_kind(render_pool_manifest(config, "p", replicas=3))["StatefulSet"]
    (container,) = sts["spec"]["template"]["spec"]["containers"]
    assert container["readinessProbe"]["httpGet"]["path"] == "/health_generate"
    assert sts["spec"]["replicas"] == 3


def test_emulated_manifest_needs_no_gpu() -> None:
    config = pool()
    sts = _by_kind(render_pool_manifest(config, "p", emulated=True))["StatefulSet"]
    spec = sts["spec"]["template"]["spec"]
    (container,) = spec["containers"]
    assert container["command"] == emulate_command(config)
    assert container["command"][:2] == ["tollway", "emulate"]
    assert "nodeSelector" not in spec
    assert "nvidia.com/gpu" not in str(container["resources"])
    assert "volumeClaimTemplates" not in sts["spec"]


@pytest.mark.parametrize("name", ["H100", "1pool", "pool_a", "a" * 53, "pool-"])
def test_kubernetes_names_are_checked(name: str) -> None:
    with pytest.raises(ConfigError):
        render_pool_manifest(pool(), name)


def test_worker_urls_must_name_the_statefulset_pods() -> None:
    assert worker_url_problems(pool(), "p") == []
    namespaced = pool(workers=["http://p-0.p.tollway.svc.cluster.local:30000"])
    assert worker_url_problems(namespaced, "p") == []
    problems = worker_url_problems(
        pool(workers=["http://10.0.0.1:30000", "http://p-1.p:8080"]), "p"
    )
    assert len(problems) == 2
    assert "p-0.p" in problems[0] and "port 30000" in problems[1]


def test_scaled_object_scales_between_min_and_the_listed_workers() -> None:
    scaled = render_pool_scaled_object(pool(), "p", pool_name="gw-pool", min_replicas=1)
    assert scaled["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "name": "p",
    }
    assert (scaled["spec"]["minReplicaCount"], scaled["spec"]["maxReplicaCount"]) == (1, 2)
    queries = [t["metadata"]["query"] for t in scaled["spec"]["triggers"]]
    assert 'tollway_pool_queue_depth{pool="gw-pool"}' in queries[0]
    assert "sglang:num_queue_reqs" in queries[1] and "sglang:token_usage" in queries[2]
    with pytest.raises(ConfigError):
        render_pool_scaled_object(pool(), "p", min_replicas=3)


def test_an_embedding_pool_launches_with_is_embedding_and_no_tool_parser() -> None:
    config = pool(name="qwen3-embedding-0.6b", embedding=True)
    args = launch_args(config)
    assert "--is-embedding" in args and "--tool-call-parser" not in args
    assert value(args, "--model-path") == "Qwen/Qwen3-Embedding-0.6B"
    assert "--embedding" in emulate_command(config)
    assert "--is-embedding" not in launch_args(pool())
