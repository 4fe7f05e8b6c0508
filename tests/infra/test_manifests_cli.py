"""``tollway pool-manifest``: output formats, round trips, and the flags the config implies."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import typer
import yaml
from typer.testing import CliRunner

from backends.sglang.launch import LaunchOptions, launch_args
from gateway.config import load_config, parse_config
from gateway.manifests_cli import OutputFormat, dump_documents, pool_needs_priority, register
from tests.infra.tools import CLUSTER_CONFIG

CONFIG = """
pools:
  small:
    gpu: h100
    model: {name: qwen2.5-7b-instruct, kv_dtype: fp8, tp: 2}
    workers: [http://small-0.small:30000]
  big:
    gpu: h200
    model: {name: llama-3.3-70b-instruct, weights_dtype: fp8, served_name: big-model}
    workers: [http://10.0.0.1:30000]
models:
  m-small: {route: "pool:small"}
  m-big: {route: "pool:big", fallbacks: ["pool:small"]}
agent_types:
  planner: {model: m-big, priority: 5}
  helper: {model: m-small}
"""


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    path = tmp_path / "tollway.yaml"
    path.write_text(CONFIG, encoding="utf-8")
    return path


def invoke(*args: str) -> Any:
    app = typer.Typer()
    register(app)

    @app.callback()
    def _root() -> None:
        """Test root (keeps `pool-manifest` a sub-command)."""

    return CliRunner().invoke(app, ["pool-manifest", *args])


def _container(docs: list[dict[str, Any]]) -> dict[str, Any]:
    (sts,) = [d for d in docs if d["kind"] == "StatefulSet"]
    container: dict[str, Any] = sts["spec"]["template"]["spec"]["containers"][0]
    return container


def test_yaml_output_round_trips_and_carries_the_implied_flags(config_file: Path) -> None:
    result = invoke("--config", str(config_file), "--pool", "small")
    assert result.exit_code == 0, result.output
    docs = list(yaml.safe_load_all(result.stdout))
    assert [d["kind"] for d in docs] == ["Service", "StatefulSet"]
    assert dump_documents(docs, OutputFormat.yaml) in result.stdout  # YAML → objects → YAML
    assert result.stdout.startswith("# Rendered from pool 'small'")
    command = _container(docs)["command"]
    assert command[command.index("--tp-size") + 1] == "2"
    assert command[command.index("--kv-cache-dtype") + 1] == "fp8_e5m2"
    assert command[command.index("--tool-call-parser") + 1] == "qwen25"
    # `planner` (priority 5) falls back to `small`, so it schedules by priority.
    assert "--enable-priority-scheduling" in command
    config = load_config(config_file)
    options = LaunchOptions(priority=pool_needs_priority(config, "small"))
    assert command[3:] == launch_args(config.pools["small"], options)


def test_json_output_is_a_list_equal_to_the_yaml(config_file: Path) -> None:
    as_json = invoke("--config", str(config_file), "--pool", "big", "--output", "json")
    as_yaml = invoke("--config", str(config_file), "--pool", "big")
    assert as_json.exit_code == 0 and as_yaml.exit_code == 0
    body = json.loads(as_json.stdout)
    assert body["kind"] == "List"
    assert body["items"] == list(yaml.safe_load_all(as_yaml.stdout))
    command = _container(body["items"])["command"]
    assert command[command.index("--quantization") + 1] == "fp8"
    assert command[command.index("--served-model-name") + 1] == "big-model"
    assert "--enable-priority-scheduling" in command


def test_workers_that_are_not_the_pods_are_warned_about(config_file: Path) -> None:
    result = invoke("--config", str(config_file), "--pool", "big")
    assert "warning: workers[0] is http://10.0.0.1:30000" in result.stderr
    clean = invoke("--config", str(config_file), "--pool", "small")
    assert "warning" not in clean.stderr


def test_options_reach_the_command(config_file: Path) -> None:
    result = invoke(
        "--config",
        str(config_file),
        "--pool",
        "small",
        "--max-total-tokens",
        "50000",
        "--mem-fraction-static",
        "0.8",
        "--image",
        "registry.example.com/sglang:1",
        "--name",
        "qwen-small",
    )
    assert result.exit_code == 0, result.output
    docs = list(yaml.safe_load_all(result.stdout))
    container = _container(docs)
    assert container["image"] == "registry.example.com/sglang:1"
    command = container["command"]
    assert command[command.index("--max-total-tokens") + 1] == "50000"
    assert command[command.index("--mem-fraction-static") + 1] == "0.8"
    assert "--enable-priority-scheduling" in command
    assert docs[0]["metadata"]["name"] == "qwen-small"
    assert docs[0]["metadata"]["annotations"]["tollway/pool"] == "small"


def test_emulated_and_keda_variants(config_file: Path) -> None:
    emulated = invoke("--config", str(config_file), "--pool", "small", "--emulated")
    assert _container(list(yaml.safe_load_all(emulated.stdout)))["command"][:2] == [
        "tollway",
        "emulate",
    ]
    keda = invoke("--config", str(config_file), "--pool", "small", "--keda", "--min-replicas", "0")
    (scaled,) = list(yaml.safe_load_all(keda.stdout))
    assert scaled["kind"] == "ScaledObject"
    assert scaled["spec"]["minReplicaCount"] == 0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--pool", "nope"], "pool 'nope' is not defined (pools: big, small)"),
        (["--pool", "small", "--name", "Bad_Name"], "is not a Kubernetes name"),
        (["--pool", "small", "--keda", "--min-replicas", "5"], "min_replicas"),
    ],
)
def test_errors_exit_2_with_a_message(config_file: Path, args: list[str], message: str) -> None:
    result = invoke("--config", str(config_file), *args)
    assert result.exit_code == 2
    assert message in result.stderr


def test_a_bad_config_file_names_the_key(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("pools: {p: {gpu: h300, model: {name: x}, workers: [http://a:1]}}\n")
    result = invoke("--config", str(bad), "--pool", "p")
    assert result.exit_code == 2
    assert "pools.p.gpu" in result.stderr


def test_priority_follows_agent_types_routes_and_fallbacks() -> None:
    config = parse_config(yaml.safe_load(CONFIG))
    assert pool_needs_priority(config, "small") and pool_needs_priority(config, "big")
    cluster = load_config(CLUSTER_CONFIG)
    assert pool_needs_priority(cluster, "h100-small")
    assert not pool_needs_priority(cluster, "h200-large")
