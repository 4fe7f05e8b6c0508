"""Liveness and readiness probes.

``/readyz`` answers 503 ``draining`` from the first shutdown signal on (the
server's :class:`gateway.drain.Drain` reaches the request through the ASGI
lifespan state), and 503 ``not_ready`` while no upstream worker is healthy.
"""

from __future__ import annotations

from collections.abc import Callable

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from gateway.drain import is_draining
from gateway.responses import error_response, json_response
from tollway.errors import ServiceUnavailable


def routes(is_ready: Callable[[], bool]) -> list[Route]:
    """``/healthz`` (the process is alive) and ``/readyz`` (it can serve)."""

    async def healthz(request: Request) -> Response:
        return json_response({"status": "ok"})

    async def readyz(request: Request) -> Response:
        if is_draining(request.scope):
            return error_response(
                ServiceUnavailable(
                    "not ready: shutting down",
                    code="draining",
                    headers={"connection": "close"},  # probe the next replica afresh
                )
            )
        if is_ready():
            return json_response({"status": "ready"})
        return error_response(
            ServiceUnavailable("not ready: no healthy upstream worker", code="not_ready")
        )

    return [
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
    ]
