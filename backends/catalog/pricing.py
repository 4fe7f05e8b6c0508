"""Per-token prices of a catalog entry, as Decimals.

A small helper, not the price book (that is :mod:`billing`): it answers what a
hosted model costs *us*, from the entry's explicit ``price`` block or from the
cost map litellm ships (never fetched over the network; see
:mod:`backends.catalog.library`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

from backends.catalog.config import CatalogEntryConfig
from backends.catalog.library import load_litellm
from tollway.errors import ConfigError

_MILLION = Decimal(1_000_000)
_ZERO = Decimal(0)


@dataclass(frozen=True, slots=True)
class TokenPrices:
    """US dollars per token (and per request) for one catalog entry."""

    input: Decimal
    cached_input: Decimal
    cache_write_input: Decimal
    output: Decimal
    per_request: Decimal = _ZERO
    source: str = "explicit"

    def cost(self, usage: Mapping[str, Any]) -> Decimal:
        """The cost of one request from its OpenAI-shaped ``usage`` object.

        ``prompt_tokens`` includes cached tokens (OpenAI's convention), which are
        charged at the cached price; reasoning tokens are part of
        ``completion_tokens``. Cache writes (``cache_creation_input_tokens``, an
        Anthropic figure) are also part of ``prompt_tokens``.
        """
        prompt = _count(usage.get("prompt_tokens"))
        completion = _count(usage.get("completion_tokens"))
        details = usage.get("prompt_tokens_details")
        cached = _count(details.get("cached_tokens")) if isinstance(details, Mapping) else 0
        written = _count(usage.get("cache_creation_input_tokens"))
        cached = min(cached, prompt)
        written = min(written, prompt - cached)
        fresh = prompt - cached - written
        return (
            fresh * self.input
            + cached * self.cached_input
            + written * self.cache_write_input
            + completion * self.output
            + self.per_request
        )


def _count(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def effective_prices(entry: CatalogEntryConfig, *, name: str = "") -> TokenPrices:
    """The per-token prices of ``entry``; :class:`ConfigError` when it has none.

    ``name`` (the catalog entry's name) only makes error messages point at the
    right YAML key.
    """
    if entry.effective_price_source == "explicit":
        price = entry.price
        if price is None:  # the config validator makes this unreachable
            raise ConfigError("price_source 'explicit' needs a 'price' block", path=_path(name))
        input_price = price.input_per_million / _MILLION
        cached = price.cached_input_per_million
        written = price.cache_write_per_million
        return TokenPrices(
            input=input_price,
            cached_input=cached / _MILLION if cached is not None else input_price,
            cache_write_input=written / _MILLION if written is not None else input_price,
            output=price.output_per_million / _MILLION,
            per_request=price.per_request,
            source="explicit",
        )
    return _litellm_prices(entry, name)


def _litellm_prices(entry: CatalogEntryConfig, name: str) -> TokenPrices:
    litellm = load_litellm()
    try:
        info: Mapping[str, Any] = litellm.get_model_info(model=entry.litellm_model)
    except Exception as exc:  # litellm raises a bare Exception for unmapped models
        raise ConfigError(
            f"litellm's bundled cost map has no price for {entry.litellm_model!r}; "
            "add an explicit 'price' block",
            path=_path(name),
        ) from exc
    input_price = _decimal(info.get("input_cost_per_token"))
    output_price = _decimal(info.get("output_cost_per_token"))
    if input_price is None or output_price is None:
        raise ConfigError(
            f"litellm's bundled cost map has no token prices for {entry.litellm_model!r}; "
            "add an explicit 'price' block",
            path=_path(name),
        )
    cached = _decimal(info.get("cache_read_input_token_cost"))
    written = _decimal(info.get("cache_creation_input_token_cost"))
    per_request = _decimal(info.get("input_cost_per_request"))
    return TokenPrices(
        input=input_price,
        cached_input=cached if cached is not None else input_price,
        cache_write_input=written if written is not None else input_price,
        output=output_price,
        per_request=per_request if per_request is not None else _ZERO,
        source="litellm",
    )


def _decimal(value: object) -> Decimal | None:
    """A cost-map float as the Decimal of its shortest repr (``1.5e-07`` → ``1.5E-7``)."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return None
    try:
        amount = Decimal(str(value))
    except InvalidOperation:
        return None
    return amount if amount.is_finite() and amount >= 0 else None


def _path(name: str) -> str:
    return f"catalog.{name}.price" if name else ""
