"""JSON responses, and the one place errors become OpenAI-shaped JSON."""

from __future__ import annotations

import logging
from typing import Any

import orjson
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from gateway.requestid import request_id_of
from gateway.routes import ANTHROPIC, OPENAI
from tollway.errors import (
    InvalidRequest,
    MethodNotAllowed,
    NotFound,
    PayloadTooLarge,
    TollwayError,
)

log = logging.getLogger("tollway")

JSON = "application/json"


def json_response(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    """Serialise ``data`` with orjson into a response."""
    return Response(orjson.dumps(data), status_code=status, headers=headers, media_type=JSON)


def error_json(exc: TollwayError, api: str = OPENAI) -> bytes:
    """The error body of ``exc`` in the shape of ``api`` (a route's
    :attr:`~gateway.routes.InferenceRoute.api`): OpenAI's, or Anthropic's."""
    body = exc.to_anthropic_body() if api == ANTHROPIC else exc.to_body()
    return orjson.dumps(body)


def error_response(exc: TollwayError, request_id: str | None = None, api: str = OPENAI) -> Response:
    """The response for a Tollway error: its status, headers and error body in the shape
    of ``api``. On an Anthropic route the request id is also in ``request-id`` (the
    header Anthropic's clients read)."""
    headers = dict(exc.headers)
    if request_id:
        headers["x-request-id"] = request_id
        if api == ANTHROPIC:
            headers["request-id"] = request_id
    return Response(
        error_json(exc, api), status_code=exc.status_code, headers=headers, media_type=JSON
    )


def _http_error(exc: HTTPException) -> TollwayError:
    if exc.status_code == 404:
        return NotFound("Unknown request URL. Please check the URL and method.", code="not_found")
    if exc.status_code == 405:
        return MethodNotAllowed("Method not allowed for this URL.")
    if exc.status_code == 413:
        return PayloadTooLarge("Request body is too large.")
    return InvalidRequest(str(exc.detail), code="http_error")


async def handle_tollway_error(request: Request, exc: Exception) -> Response:
    """Exception handler for :class:`TollwayError` (registered once, in the app factory)."""
    assert isinstance(exc, TollwayError)
    return error_response(exc, request_id_of(request.scope))


async def handle_http_exception(request: Request, exc: Exception) -> Response:
    """Starlette's 404/405/… rendered in OpenAI's error shape."""
    assert isinstance(exc, HTTPException)
    return error_response(_http_error(exc), request_id_of(request.scope))


async def handle_unexpected(request: Request, exc: Exception) -> Response:
    """Any other exception: a 500 that leaks nothing but the request id (logged here)."""
    log.error("request %s failed", request_id_of(request.scope), exc_info=exc)
    err = TollwayError("The server had an error while processing your request.")
    return error_response(err, request_id_of(request.scope))
