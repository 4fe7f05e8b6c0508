"""``/readyz`` reads the server's drain flag from the request's lifespan state (in-process)."""

from __future__ import annotations

import httpx
from starlette.applications import Starlette

from gateway.api.health import routes
from gateway.drain import DRAIN_STATE_KEY, Drain, is_draining


async def test_readiness_turns_503_once_draining() -> None:
    drain = Drain()
    app = Starlette(routes=routes(lambda: True))

    async def with_state(scope, receive, send):  # type: ignore[no-untyped-def]
        scope["state"] = {DRAIN_STATE_KEY: drain}  # what uvicorn copies from the lifespan
        await app(scope, receive, send)

    transport = httpx.ASGITransport(app=with_state)
    async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
        assert (await client.get("/readyz")).status_code == 200
        drain.begin()
        resp = await client.get("/readyz")
        assert resp.status_code == 503
        assert resp.json()["error"]["code"] == "draining"
        assert resp.headers["connection"] == "close"
        assert (await client.get("/healthz")).status_code == 200


def test_is_draining_without_a_drain_in_the_scope() -> None:
    assert not is_draining({"type": "http"})
    assert not is_draining({"state": {DRAIN_STATE_KEY: "nonsense"}})
