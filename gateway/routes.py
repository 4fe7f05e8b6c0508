"""The route table of the inference routes, read by everything that dispatches.

``POST /v1/chat/completions``, ``/v1/completions``, ``/v1/embeddings``, ``/v1/responses``,
``/v1/messages`` and ``/v1/messages/count_tokens`` are served by the
dispatcher (:mod:`gateway.dispatch`) straight from this table, ahead of
FastAPI's router; the OpenAPI description (``/openapi.json``, ``/docs``) lists
them from the same table (:meth:`RouteTable.openapi_paths`). No other copy of
these paths exists: a route added here is served and documented at once.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

Handler = Callable[[Request], Awaitable[Response]]
#: The APIs a route may speak (``InferenceRoute.api``): OpenAI's unless it says otherwise.
OPENAI = "openai"
ANTHROPIC = "anthropic"
_SCHEMAS = "#/components/schemas/"

_ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "properties": {
                "message": {"type": "string"},
                "type": {"type": "string"},
                "param": {"type": ["string", "null"]},
                "code": {"type": ["string", "null"]},
            },
        }
    },
}

#: Anthropic's error shape, on the routes of its Messages API (:mod:`gateway.anthropic`).
_ANTHROPIC_ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["type", "error"],
    "properties": {
        "type": {"const": "error"},
        "error": {
            "type": "object",
            "properties": {"type": {"type": "string"}, "message": {"type": "string"}},
        },
    },
}


@dataclass(frozen=True, slots=True)
class InferenceRoute:
    """One inference route: ``POST path`` answered by ``handler``; ``api`` names the API
    whose shapes it speaks (``openai``, or ``anthropic``: errors in Anthropic's shape,
    the key in ``x-api-key`` or a bearer)."""

    path: str
    handler: Handler
    summary: str
    method: str = "POST"
    api: str = OPENAI

    def operation(self) -> dict[str, Any]:
        """The route's OpenAPI operation (its API's request and response schemas apply)."""
        anthropic = self.api == ANTHROPIC
        schema = "AnthropicError" if anthropic else "OpenAIError"
        error = {"content": {"application/json": {"schema": {"$ref": _SCHEMAS + schema}}}}
        security: list[dict[str, list[str]]] = [{"bearer": []}]
        if anthropic:
            security.insert(0, {"apiKey": []})
        return {
            "tags": ["inference"],
            "summary": self.summary,
            "operationId": self.path.strip("/").replace("/", "_"),
            "security": security,
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": {"type": "object"}}},
            },
            "responses": {
                "200": {
                    "description": "A JSON completion, or a `text/event-stream` when "
                    "`stream` is true.",
                    "content": {
                        "application/json": {"schema": {"type": "object"}},
                        "text/event-stream": {"schema": {"type": "string"}},
                    },
                },
                "default": {"description": f"An error in {schema[:-5]}'s shape.", **error},
            },
        }


class RouteTable:
    """The inference routes by path."""

    def __init__(self, routes: Iterable[InferenceRoute]) -> None:
        self.by_path: dict[str, InferenceRoute] = {r.path: r for r in routes}

    def get(self, path: str) -> InferenceRoute | None:
        """The route at ``path`` (any method), or None."""
        return self.by_path.get(path)

    def api_of(self, path: str) -> str:
        """The API whose error shape answers a request for ``path`` (``openai`` for a
        path that is no inference route)."""
        route = self.by_path.get(path)
        return route.api if route is not None else OPENAI

    def openapi_paths(self) -> dict[str, Any]:
        """The ``paths`` entries of these routes."""
        return {r.path: {r.method.lower(): r.operation()} for r in self.by_path.values()}

    def document(self, schema: dict[str, Any]) -> dict[str, Any]:
        """Add these routes (and the error schema and bearer scheme they use) to ``schema``."""
        schema.setdefault("paths", {}).update(self.openapi_paths())
        components = schema.setdefault("components", {})
        schemas = components.setdefault("schemas", {})
        schemes = components.setdefault("securitySchemes", {})
        schemas["OpenAIError"] = _ERROR_SCHEMA
        schemes["bearer"] = {"type": "http", "scheme": "bearer"}
        if any(r.api == ANTHROPIC for r in self.by_path.values()):
            schemas["AnthropicError"] = _ANTHROPIC_ERROR_SCHEMA
            schemes["apiKey"] = {"type": "apiKey", "in": "header", "name": "x-api-key"}
        return schema
