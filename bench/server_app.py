"""The trivial ASGI app both servers serve in ``bench.servers``.

One FastAPI POST route that parses the JSON body with orjson and returns pre-encoded
bytes, the same shape of work as the gateway's handler minus the pipeline, plus a
``GET /health`` for readiness.
"""

from __future__ import annotations

import orjson
from fastapi import FastAPI, Request, Response

from bench.upstream import completion_response

_BODY = completion_response("bench-model").split(b"\r\n\r\n", 1)[1]

app = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)


@app.post("/v1/chat/completions")
async def chat_completions(request: Request) -> Response:
    """Parse the body once and answer a canned completion."""
    body = orjson.loads(await request.body())
    if not isinstance(body, dict) or "messages" not in body:
        return Response(b'{"error": "bad request"}', status_code=400, media_type="application/json")
    return Response(_BODY, media_type="application/json")


@app.get("/health")
async def health() -> Response:
    """Readiness."""
    return Response(b"", status_code=200)
