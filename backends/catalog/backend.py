"""A hosted model behind the :class:`backends.base.Backend` interface (routes ``catalog:<name>``).

Each request waits for room under the provider's rate limits
(:mod:`backends.catalog.limits`), then goes out through the entry's transport:
litellm (any provider) or a direct aiohttp POST (OpenAI-compatible providers).
Both answer with OpenAI bytes, a ``chat.completion`` body or an SSE stream that
ends with a usage chunk and ``[DONE]``, so the gateway relays and meters a
catalog model exactly like a pool.

litellm is imported by :meth:`CatalogBackend.start` only when the entry needs
it (the litellm transport, or prices from litellm's cost map), so a gateway
with no such entry never pays for the import. There is no health probe: a
started catalog backend is ready; a provider outage shows as errors that the
gateway's fallbacks handle.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Protocol

import aiohttp

from backends.base import UpstreamRequest, UpstreamResponse
from backends.catalog.config import CatalogEntryConfig
from backends.catalog.direct import DirectOpenAITransport
from backends.catalog.library import load_litellm
from backends.catalog.limits import ProviderLimiter, estimate_tokens
from backends.catalog.pricing import TokenPrices, effective_prices
from backends.catalog.via_litellm import LitellmTransport
from tollway.errors import ConfigError, UpstreamUnavailable


class CatalogTransport(Protocol):
    """How a catalog backend reaches its provider."""

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def send(self, request: UpstreamRequest) -> UpstreamResponse: ...


class CatalogBackend:
    """One catalog entry: a hosted model reached through litellm or directly."""

    def __init__(
        self,
        name: str,
        config: CatalogEntryConfig,
        *,
        api_key: str | None = None,
        environ: Mapping[str, str] | None = None,
        session: aiohttp.ClientSession | None = None,
        limiter: ProviderLimiter | None = None,
    ) -> None:
        """``api_key`` overrides ``config.api_key_env``, which is looked up in
        ``environ`` (default: the process environment) at :meth:`start`.
        ``session`` is used by the ``direct_openai`` transport (tests inject one);
        ``limiter`` replaces the one built from ``rpm``/``tpm``.
        """
        self.name = name
        self.config = config
        self.route = f"catalog:{name}"
        self.upstream_model = config.upstream_name
        self.owned_by = config.owner
        self._api_key = api_key
        self._environ = environ
        self._session = session
        self.limiter = limiter or ProviderLimiter(
            rpm=config.rpm, tpm=config.tpm, max_queue_s=config.max_queue_s, label=self.route
        )
        self._transport: CatalogTransport | None = None
        self._prices: TokenPrices | None = None

    @property
    def prices(self) -> TokenPrices:
        """The entry's per-token prices (known once started)."""
        if self._prices is None:
            raise RuntimeError(f"{self.route} is not started")
        return self._prices

    def _resolve_key(self) -> str | None:
        if self._api_key is not None or self.config.api_key_env is None:
            return self._api_key
        environ = os.environ if self._environ is None else self._environ
        key = environ.get(self.config.api_key_env)
        if not key:
            raise ConfigError(
                f"environment variable {self.config.api_key_env} (the provider key) is not set",
                path=f"catalog.{self.name}.api_key_env",
            )
        return key

    async def start(self) -> None:
        """Resolve the key and prices (failing fast on either), open the transport."""
        api_key = self._resolve_key()
        self._prices = effective_prices(self.config, name=self.name)
        transport: CatalogTransport
        if self.config.effective_transport == "direct_openai":
            transport = DirectOpenAITransport(
                self.config, api_key=api_key, label=self.route, session=self._session
            )
        else:
            transport = LitellmTransport(
                self.config,
                litellm=load_litellm(),
                api_key=api_key,
                label=self.route,
                upstream_model=self.upstream_model,
            )
        await transport.start()
        self._transport = transport

    async def stop(self) -> None:
        """Close the transport's connections."""
        transport, self._transport = self._transport, None
        if transport is not None:
            await transport.stop()

    def is_ready(self) -> bool:
        """Ready once started (no probe: hosted providers are not ours to health-check)."""
        return self._transport is not None

    async def send(self, request: UpstreamRequest) -> UpstreamResponse:
        """Wait for the provider's rate limits, then send; raise Tollway errors on failure."""
        transport = self._transport
        if transport is None:
            raise UpstreamUnavailable(f"{self.route} is not started")
        if self.limiter.active:
            await self.limiter.acquire(estimate_tokens(request.body, request.payload))
        return await transport.send(request)
