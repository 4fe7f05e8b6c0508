"""OpenAI-compatible model routes (``/v1/models``).

The inference routes are in the dispatcher's route table (:mod:`gateway.routes`).
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from gateway.auth import Authenticator
from gateway.registry import ModelEntry, ModelRegistry
from gateway.responses import json_response


def _model_object(entry: ModelEntry) -> dict[str, object]:
    return {
        "id": entry.name,
        "object": "model",
        "created": entry.created,
        "owned_by": entry.owned_by,
    }


def routes(registry: ModelRegistry, auth: Authenticator) -> list[Route]:
    """The ``/v1/models`` routes."""

    async def list_models(request: Request) -> Response:
        principal = await auth.authenticate(request.headers.get("authorization"))
        allowed = principal.allowed_models
        data = [
            _model_object(e)
            for e in registry.models.values()
            if allowed is None or e.name in allowed
        ]
        return json_response({"object": "list", "data": data})

    async def get_model(request: Request) -> Response:
        principal = await auth.authenticate(request.headers.get("authorization"))
        name = request.path_params["model"]
        allowed = principal.allowed_models
        # A model outside the key's scopes is as unknown to it as a missing one.
        entry = registry.entry(name, visible=allowed is None or name in allowed)
        return json_response(_model_object(entry))

    return [
        Route("/v1/models", list_models, methods=["GET"]),
        Route("/v1/models/{model:path}", get_model, methods=["GET"]),
    ]
