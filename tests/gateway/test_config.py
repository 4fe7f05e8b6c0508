"""The configuration file: strict parsing, and errors that name the bad key."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from gateway.config import load_config, parse_config
from tollway.errors import ConfigError

GOOD: dict[str, Any] = {
    "pools": {
        "h100-small": {
            "gpu": "h100",
            "model": {"name": "llama-3.1-8b-instruct", "weights_dtype": "bf16", "tp": 1},
            "workers": ["http://10.0.1.10:30000", "http://10.0.1.11:30000/"],
            "kv_headroom": 0.8,
        }
    },
    "catalog": {"gpt-4o-mini": {"litellm_model": "openai/gpt-4o-mini", "rpm": 500}},
    "models": {"agent-small": {"route": "pool:h100-small", "fallbacks": ["catalog:gpt-4o-mini"]}},
    "agent_types": {"coordinator": {"model": "agent-small", "priority": 10}},
}


def with_change(path: str, value: Any) -> dict[str, Any]:
    import copy

    data = copy.deepcopy(GOOD)
    node = data
    keys = path.split(".")
    for key in keys[:-1]:
        node = node[key]
    node[keys[-1]] = value
    return data


def test_a_good_file_parses_into_a_frozen_config(tmp_path: Path) -> None:
    import yaml

    file = tmp_path / "tollway.yaml"
    file.write_text(yaml.safe_dump(GOOD))
    config = load_config(file)
    pool = config.pools["h100-small"]
    assert pool.workers == ["http://10.0.1.10:30000", "http://10.0.1.11:30000"]
    assert pool.health.unhealthy_threshold == 2
    with pytest.raises(Exception):  # noqa: B017 - pydantic's frozen error type varies
        pool.kv_headroom = 0.5  # type: ignore[misc]


@pytest.mark.parametrize(
    ("data", "path", "reason"),
    [
        (with_change("pools.h100-small.gpuu", "h100"), "pools.h100-small.gpuu", "unknown key"),
        (with_change("pools.h100-small.gpu", "tpu"), "pools.h100-small.gpu", "Input should be"),
        (
            with_change("pools.h100-small.workers", ["ftp://x"]),
            "pools.h100-small.workers",
            "http(s) URL",
        ),
        (with_change("pools.h100-small.workers", []), "pools.h100-small.workers", "at least 1"),
        (
            with_change("pools.h100-small.kv_headroom", 1.5),
            "pools.h100-small.kv_headroom",
            "less than or equal",
        ),
        (
            with_change("pools.h100-small.model.tp", 0),
            "pools.h100-small.model.tp",
            "greater than or equal",
        ),
        (
            with_change("models.agent-small.route", "pool:nope"),
            "models.agent-small.route",
            "not defined under 'pools'",
        ),
        (
            with_change("models.agent-small.route", "gpu:x"),
            "models.agent-small.route",
            "must be 'pool:<name>'",
        ),
        (
            with_change("models.agent-small.fallbacks", ["catalog:none"]),
            "models.agent-small.fallbacks[0]",
            "not defined under 'catalog'",
        ),
        (
            with_change("agent_types.coordinator.model", "ghost"),
            "agent_types.coordinator.model",
            "not defined under 'models'",
        ),
        (
            with_change("server", {"max_body_bytes": 10}),
            "server.max_body_bytes",
            "greater than or equal",
        ),
        (with_change("surprise", 1), "surprise", "unknown key"),
        (
            with_change("routing", {"default_agent_type": "ghost"}),
            "routing.default_agent_type",
            "not defined under 'agent_types'",
        ),
        (
            with_change("routing", {"unknown_agent_type": "default"}),
            "routing.unknown_agent_type",
            "needs routing.default_agent_type",
        ),
        (
            with_change("agent_types.agent-small", {"model": "agent-small"}),
            "agent_types.agent-small",
            "both a model and an agent type",
        ),
        (
            with_change("agent_types.coordinator.fallbacks", ["pool:none"]),
            "agent_types.coordinator.fallbacks[0]",
            "not defined",
        ),
        (
            with_change("pools.h100-small.policy", "random"),
            "pools.h100-small.policy",
            "Input should be",
        ),
        (
            with_change("limits", {"budget_resync_check_s": -1}),
            "limits.budget_resync_check_s",
            "greater than or equal",
        ),
        (
            with_change("limits", {"budget_resync_check_s": 0.01}),
            "limits.budget_resync_check_s",
            "0 (off) or at least 0.1",
        ),
        (
            with_change("server", {"client_write_timeout_s": 0}),
            "server.client_write_timeout_s",
            "greater than 0",
        ),
    ],
)
def test_bad_files_name_the_key_and_the_reason(data: Any, path: str, reason: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(data)
    assert info.value.path == path
    assert reason in info.value.reason
    assert str(info.value).startswith(path + ": ")


def test_unreadable_and_invalid_yaml_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("pools: [unclosed\n")
    with pytest.raises(ConfigError, match="invalid YAML at line"):
        load_config(bad)
    scalar = tmp_path / "scalar.yaml"
    scalar.write_text("42\n")
    with pytest.raises(ConfigError, match="mapping at the top level"):
        load_config(scalar)


def test_the_client_write_deadline_defaults_to_30_s() -> None:
    assert parse_config(GOOD).server.client_write_timeout_s == 30.0
    changed = parse_config(with_change("server", {"client_write_timeout_s": 2.5}))
    assert changed.server.client_write_timeout_s == 2.5


def test_an_empty_file_is_a_valid_empty_config(tmp_path: Path) -> None:
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    assert load_config(empty).pools == {}
