"""Configuration schema of one hosted model (the ``catalog:`` entries of the YAML file).

Parsed strictly (unknown keys are errors) and frozen; the gateway's config
module composes :class:`CatalogEntryConfig` into the whole file's schema::

    catalog:
      gpt-4o-mini:
        litellm_model: openai/gpt-4o-mini
        api_key_env: OPENAI_API_KEY
        rpm: 500
        tpm: 200000
      claude-sonnet:
        litellm_model: anthropic/claude-sonnet-4-5
        api_key_env: ANTHROPIC_API_KEY
        timeouts: {connect_s: 5, read_s: 120, total_s: 600}
        price: {input_per_million: "3.00", cached_input_per_million: "0.30",
                output_per_million: "15.00"}

Importing this module does not import litellm.
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator, model_validator

TransportName = Literal["auto", "litellm", "direct_openai"]
PriceSource = Literal["explicit", "litellm"]

#: litellm providers that speak OpenAI's chat-completions wire format, so the
#: ``direct_openai`` transport can POST to them without litellm.
OPENAI_COMPATIBLE_PROVIDERS = frozenset({"openai", "hosted_vllm"})

#: Where ``direct_openai`` posts when an OpenAI-compatible entry names no ``api_base``.
DEFAULT_API_BASES = {"openai": "https://api.openai.com/v1"}


def _decimal_string(value: Any) -> Decimal:
    if isinstance(value, Decimal):
        amount = value
    elif isinstance(value, bool) or not isinstance(value, str | int):
        raise ValueError('must be a decimal string such as "0.15" (quote it in YAML)')
    else:
        try:
            amount = Decimal(str(value).strip())
        except InvalidOperation:
            raise ValueError(f"not a decimal number: {value!r}") from None
    if not amount.is_finite() or amount < 0:
        raise ValueError("must be a finite, non-negative amount")
    return amount


#: A non-negative decimal amount in US dollars, written as a string in YAML.
Money = Annotated[Decimal, BeforeValidator(_decimal_string)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CatalogTimeouts(_Strict):
    """Provider timeouts, in seconds."""

    connect_s: float = Field(default=10.0, gt=0, le=600)
    read_s: float = Field(
        default=120.0, gt=0, le=3600, description="Longest wait for the next byte of an answer."
    )
    total_s: float = Field(default=600.0, gt=0, le=3600, description="Whole request.")


class CatalogPrice(_Strict):
    """An explicit price, in US dollars, as decimal strings."""

    input_per_million: Money
    output_per_million: Money
    cached_input_per_million: Money | None = Field(
        default=None, description="Cache reads; defaults to `input_per_million`."
    )
    cache_write_per_million: Money | None = Field(
        default=None, description="Prompt-cache writes (Anthropic); defaults to the input price."
    )
    per_request: Money = Decimal(0)


class CatalogEntryConfig(_Strict):
    """A hosted model reached through litellm (or directly, when OpenAI-compatible)."""

    litellm_model: str = Field(
        min_length=3,
        max_length=256,
        description="litellm's `<provider>/<model>` string, e.g. `anthropic/claude-3-5-haiku`.",
    )
    api_base: str | None = Field(default=None, description="Provider base URL override.")
    api_key_env: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,127}$",
        description="Name of the environment variable holding the provider key.",
    )
    timeouts: CatalogTimeouts = Field(default_factory=CatalogTimeouts)
    rpm: int | None = Field(default=None, ge=1, description="Provider requests per minute.")
    tpm: int | None = Field(default=None, ge=1, description="Provider tokens per minute.")
    max_queue_s: float = Field(
        default=10.0,
        ge=0,
        le=300,
        description="Longest a request waits for the provider rate limit before failing (429).",
    )
    transport: TransportName = Field(
        default="auto",
        description="`litellm`, `direct_openai` (aiohttp POST, OpenAI-compatible providers "
        "only), or `auto`: direct for OpenAI-compatible providers, litellm for the rest.",
    )
    price_source: PriceSource | None = Field(
        default=None,
        description="`explicit` (the `price` block) or `litellm` (its bundled cost map); "
        "defaults to `explicit` when `price` is given.",
    )
    price: CatalogPrice | None = None
    drop_params: bool = Field(
        default=False, description="Let litellm drop parameters the provider does not support."
    )
    max_connections: int = Field(default=256, ge=1, le=65536)
    embedding: bool = Field(
        default=False,
        description="An embedding model: served on /v1/embeddings (litellm's `aembedding`), "
        "not on chat.",
    )
    owned_by: str | None = Field(
        default=None, description="Owner shown in /v1/models; defaults to the provider."
    )

    @field_validator("litellm_model")
    @classmethod
    def _check_model(cls, value: str) -> str:
        provider, sep, model = value.partition("/")
        if not sep or not provider or not model or provider.strip() != provider:
            raise ValueError("must be litellm's '<provider>/<model>', e.g. 'openai/gpt-4o-mini'")
        return value

    @field_validator("api_base")
    @classmethod
    def _check_api_base(cls, value: str | None) -> str | None:
        if value is None:
            return None
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(f"{value!r} is not an http(s) URL")
        return value.rstrip("/")

    @model_validator(mode="after")
    def _check_combinations(self) -> CatalogEntryConfig:
        if self.price_source == "explicit" and self.price is None:
            raise ValueError("price_source 'explicit' needs a 'price' block")
        if self.price_source == "litellm" and self.price is not None:
            raise ValueError("a 'price' block is only used with price_source 'explicit'")
        if self.transport == "direct_openai":
            if self.provider not in OPENAI_COMPATIBLE_PROVIDERS:
                raise ValueError(
                    f"transport 'direct_openai' needs an OpenAI-compatible provider "
                    f"({', '.join(sorted(OPENAI_COMPATIBLE_PROVIDERS))}), not {self.provider!r}"
                )
            if self.direct_api_base is None:
                raise ValueError("transport 'direct_openai' needs 'api_base' for this provider")
        return self

    @property
    def provider(self) -> str:
        """litellm's provider name: the part of ``litellm_model`` before the first ``/``."""
        return self.litellm_model.partition("/")[0]

    @property
    def upstream_name(self) -> str:
        """The ``model`` value the provider expects (``litellm_model`` without the provider)."""
        return self.litellm_model.partition("/")[2]

    @property
    def owner(self) -> str:
        """The ``owned_by`` shown in ``/v1/models``."""
        return self.owned_by or self.provider

    @property
    def effective_price_source(self) -> PriceSource:
        """Where prices come from: the explicit block if given, else litellm's cost map."""
        if self.price_source is not None:
            return self.price_source
        return "explicit" if self.price is not None else "litellm"

    @property
    def direct_api_base(self) -> str | None:
        """The base URL the ``direct_openai`` transport posts to (``None``: cannot go direct)."""
        if self.provider not in OPENAI_COMPATIBLE_PROVIDERS:
            return None
        return self.api_base or DEFAULT_API_BASES.get(self.provider)

    @property
    def effective_transport(self) -> Literal["litellm", "direct_openai"]:
        """The transport ``auto`` resolves to (see ``bench/catalog/RESULTS.md`` for why)."""
        if self.transport != "auto":
            return self.transport
        return "direct_openai" if self.direct_api_base is not None else "litellm"
