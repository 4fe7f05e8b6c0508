"""The ``direct_openai`` transport: an aiohttp POST to an OpenAI-compatible provider.

For ``openai/...`` and ``hosted_vllm/...`` entries litellm only forwards the
body, and costs far more per call than the HTTP itself (``bench/catalog``), so
this transport posts the gateway's body bytes as the SGLang pools do, over
pooled keep-alive connections, and relays a stream's bytes as they arrive.
Non-2xx answers and aiohttp exceptions map to the same errors as litellm's
(:mod:`backends.catalog.errors`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import orjson

from backends.base import UpstreamRequest, UpstreamResponse
from backends.catalog.config import CatalogEntryConfig
from backends.catalog.errors import error_from_status, translate_http_errors
from backends.upstream_errors import retry_after_of


def make_session(limit: int) -> aiohttp.ClientSession:
    """A pooled keep-alive session for one provider."""
    connector = aiohttp.TCPConnector(limit=limit, keepalive_timeout=60, ttl_dns_cache=300)
    return aiohttp.ClientSession(
        connector=connector,
        auto_decompress=True,
        skip_auto_headers=("User-Agent",),
    )


def _with_usage(request: UpstreamRequest) -> bytes:
    """The body to send: a stream always asks for usage (the gateway already does)."""
    payload = request.payload
    if not request.stream or payload is None:
        return request.body
    options = payload.get("stream_options")
    if isinstance(options, dict) and options.get("include_usage") is True:
        return request.body
    body = dict(payload)
    body["stream_options"] = {
        **(options if isinstance(options, dict) else {}),
        "include_usage": True,
    }
    return orjson.dumps(body)


class DirectOpenAITransport:
    """Posts chat requests straight to an OpenAI-compatible ``api_base``."""

    def __init__(
        self,
        config: CatalogEntryConfig,
        *,
        api_key: str | None,
        label: str,
        session: aiohttp.ClientSession | None = None,
    ) -> None:
        base = config.direct_api_base
        if base is None:
            raise ValueError(f"{label}: {config.provider!r} cannot use direct_openai")
        self.config = config
        self.label = label
        self.base = base
        self._session = session
        self._owns_session = session is None
        self._headers = {"content-type": "application/json"}
        if api_key:
            self._headers["authorization"] = f"Bearer {api_key}"
        t = config.timeouts
        self._timeout = aiohttp.ClientTimeout(
            total=t.total_s, sock_connect=t.connect_s, sock_read=t.read_s
        )

    async def start(self) -> None:
        """Open the connection pool."""
        if self._session is None:
            self._session = make_session(self.config.max_connections)

    async def stop(self) -> None:
        """Close the connections this transport opened."""
        if self._session is not None and self._owns_session:
            await self._session.close()
            self._session = None

    async def send(self, request: UpstreamRequest) -> UpstreamResponse:
        """POST the body; raise :mod:`tollway.errors` on failure."""
        session = self._session
        if session is None:
            raise RuntimeError(f"{self.label} is not started")
        # The base URL carries the version (``.../v1``), the gateway's path too.
        url = self.base + request.path.removeprefix("/v1")
        headers = {**self._headers, "x-request-id": request.request_id}
        with translate_http_errors(self.label):
            resp = await session.post(
                url, data=_with_usage(request), headers=headers, timeout=self._timeout
            )
            if resp.status >= 300 or not request.stream:
                try:
                    body = await resp.read()
                finally:
                    resp.release()
                if resp.status >= 300:
                    raise error_from_status(
                        resp.status, body, self.label, retry_after_of(resp.headers)
                    )
                return UpstreamResponse(
                    status=resp.status, route=self.label, worker=self.base, body=body
                )

        async def close() -> None:
            resp.release()

        return UpstreamResponse(
            status=resp.status,
            route=self.label,
            worker=self.base,
            stream=self._relay(resp),
            _close=close,
        )

    async def _relay(self, resp: aiohttp.ClientResponse) -> AsyncIterator[bytes]:
        with translate_http_errors(self.label, streaming=True):
            async for block in resp.content.iter_any():
                yield block
