"""The catalog entry schema and the price helper."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from backends.catalog import CatalogEntryConfig, effective_prices
from backends.catalog.library import load_litellm
from tests.backends.catalog.conftest import LITELLM_WARNINGS
from tollway.errors import ConfigError

pytestmark = LITELLM_WARNINGS

EXAMPLE = """
gpt-4o-mini:
  litellm_model: openai/gpt-4o-mini
  api_key_env: OPENAI_API_KEY
  rpm: 500
  tpm: 200000
claude-sonnet:
  litellm_model: anthropic/claude-sonnet-4-5
  api_key_env: ANTHROPIC_API_KEY
  timeouts: {connect_s: 5, read_s: 120, total_s: 600}
  price:
    input_per_million: "3.00"
    cached_input_per_million: "0.30"
    cache_write_per_million: "3.75"
    output_per_million: "15.00"
local-vllm:
  litellm_model: hosted_vllm/qwen2.5-7b-instruct
  api_base: http://10.0.3.10:8000/v1/
  transport: litellm
  price: {input_per_million: "0", output_per_million: "0", per_request: "0.0001"}
"""


def _parse(data: dict[str, Any]) -> CatalogEntryConfig:
    return CatalogEntryConfig.model_validate(data)


def test_example_yaml_parses() -> None:
    entries = {k: _parse(v) for k, v in yaml.safe_load(EXAMPLE).items()}
    mini, sonnet, local = entries["gpt-4o-mini"], entries["claude-sonnet"], entries["local-vllm"]
    assert (mini.provider, mini.upstream_name, mini.owner) == ("openai", "gpt-4o-mini", "openai")
    assert mini.effective_transport == "direct_openai"
    assert mini.direct_api_base == "https://api.openai.com/v1"
    assert mini.effective_price_source == "litellm"
    assert sonnet.effective_transport == "litellm"
    assert sonnet.effective_price_source == "explicit"
    assert sonnet.timeouts.read_s == 120
    assert local.api_base == "http://10.0.3.10:8000/v1"
    assert local.effective_transport == "litellm"


@pytest.mark.parametrize(
    ("data", "where"),
    [
        ({"litellm_model": "gpt-4o-mini"}, "litellm_model"),
        ({"litellm_model": "openai/x", "rpm": 0}, "rpm"),
        ({"litellm_model": "openai/x", "colour": "red"}, "colour"),
        ({"litellm_model": "openai/x", "api_base": "ftp://host"}, "api_base"),
        ({"litellm_model": "openai/x", "api_key_env": "NOT VALID"}, "api_key_env"),
        ({"litellm_model": "anthropic/x", "transport": "direct_openai"}, "direct_openai"),
        ({"litellm_model": "hosted_vllm/x", "transport": "direct_openai"}, "api_base"),
        ({"litellm_model": "openai/x", "price_source": "explicit"}, "price"),
        (
            {
                "litellm_model": "openai/x",
                "price": {"input_per_million": 0.15, "output_per_million": "1"},
            },
            "decimal string",
        ),
        (
            {
                "litellm_model": "openai/x",
                "price": {"input_per_million": "-1", "output_per_million": "1"},
            },
            "non-negative",
        ),
    ],
)
def test_bad_entries_are_refused(data: dict[str, Any], where: str) -> None:
    with pytest.raises(ValidationError) as caught:
        _parse(data)
    assert where in str(caught.value)


def test_entries_are_frozen() -> None:
    config = _parse({"litellm_model": "openai/x"})
    with pytest.raises(ValidationError):
        config.rpm = 5  # type: ignore[misc]


def test_explicit_prices_and_cost() -> None:
    sonnet = _parse(yaml.safe_load(EXAMPLE)["claude-sonnet"])
    prices = effective_prices(sonnet)
    assert prices.input == Decimal("0.000003")
    assert prices.cached_input == Decimal("0.0000003")
    assert prices.cache_write_input == Decimal("0.00000375")
    assert prices.output == Decimal("0.000015")
    usage = {
        "prompt_tokens": 1000,
        "completion_tokens": 200,
        "prompt_tokens_details": {"cached_tokens": 600},
        "cache_creation_input_tokens": 100,
    }
    # 300 fresh input, 600 cached, 100 written, 200 output.
    expected = Decimal("0.0009") + Decimal("0.00018") + Decimal("0.000375") + Decimal("0.003")
    assert prices.cost(usage) == expected
    assert prices.cost({}) == Decimal(0)


def test_cached_price_defaults_to_input_price() -> None:
    config = _parse(
        {
            "litellm_model": "openai/x",
            "price": {"input_per_million": "1", "output_per_million": "2", "per_request": "0.5"},
        }
    )
    prices = effective_prices(config)
    assert prices.cached_input == prices.input == Decimal("0.000001")
    assert prices.per_request == Decimal("0.5")


def test_prices_from_litellms_bundled_cost_map() -> None:
    prices = effective_prices(_parse({"litellm_model": "openai/gpt-4o-mini"}))
    bundled = load_litellm().model_cost["gpt-4o-mini"]
    assert prices.source == "litellm"
    assert prices.input == Decimal(str(bundled["input_cost_per_token"])) > 0
    assert prices.output == Decimal(str(bundled["output_cost_per_token"])) > 0
    assert prices.cached_input == Decimal(str(bundled["cache_read_input_token_cost"]))


def test_unpriced_model_is_a_config_error() -> None:
    config = _parse({"litellm_model": "openai/no-such-model-anywhere"})
    with pytest.raises(ConfigError) as caught:
        effective_prices(config, name="mystery")
    assert caught.value.path == "catalog.mystery.price"
