"""The application factory: ``create_app(config)`` builds everything.

No module-level state: the parts are built by :func:`gateway.services.build_services`,
whose lifespan opens and closes connections and background tasks; here they
are put behind the FastAPI app (:func:`build_api`) and the dispatcher, with the
inference routes' table (:func:`inference_routes`).
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from gateway.anthropic.api import COUNT_TOKENS_PATH, MESSAGES_PATH, MessagesApi
from gateway.api import admin, health, openai, usage
from gateway.config import TollwayConfig
from gateway.dispatch import Dispatcher
from gateway.embeddings import EMBEDDINGS_PATH
from gateway.metrics import CONTENT_TYPE
from gateway.requestid import RequestIds, request_id_of
from gateway.responses import (
    error_response,
    handle_http_exception,
    handle_tollway_error,
    handle_unexpected,
)
from gateway.responsesapi.api import RESPONSES_PATH, ResponsesApi
from gateway.responsesapi.api import router as responses_router
from gateway.responsesapi.conversations import router as conversations_router
from gateway.routes import ANTHROPIC, InferenceRoute, RouteTable
from gateway.services import Services, build_services
from gateway.settings import Settings
from tollway.errors import InvalidRequest, TollwayError

log = logging.getLogger("tollway")


class GatewayApi(FastAPI):
    """The FastAPI app of every route but the inference ones; its OpenAPI description
    lists those too, from the dispatcher's route table."""

    route_table: RouteTable | None = None

    def openapi(self) -> dict[str, Any]:
        if self.openapi_schema is None:
            schema = super().openapi()
            if self.route_table is not None:
                self.route_table.document(schema)
            return schema
        return self.openapi_schema


class Gateway:
    """The gateway's ASGI app: the dispatcher in front of the FastAPI app.

    ``state`` and ``router`` are the FastAPI app's (tests and tools reach the
    registry, store and metering through ``app.state``; the lifespan through
    ``app.router.lifespan_context``). ``route_table`` is the dispatcher's: the HTTP
    protocol reads it to answer its own errors in a route's shape.
    """

    def __init__(self, api: GatewayApi, dispatcher: Dispatcher) -> None:
        self.api = api
        self.dispatcher = dispatcher
        self.route_table = dispatcher.table
        self.state = api.state
        self.router = api.router

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.dispatcher(scope, receive, send)

    def openapi(self) -> dict[str, Any]:
        """The OpenAPI description of the documented routes."""
        return self.api.openapi()


def admin_token_of(config: TollwayConfig, settings: Settings) -> str | None:
    """The admin token: ``TOLLWAY_ADMIN_TOKEN`` overrides the config's, with a warning."""
    env, file = settings.admin_token, config.admin_token
    if env and file and env.get_secret_value() != file.get_secret_value():
        log.warning(
            "TOLLWAY_ADMIN_TOKEN is set and differs from the config's admin_token: the "
            "environment's token is used and the config's is refused"
        )
    token = env or file
    return token.get_secret_value() if token else None


async def _handle_validation(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    first = exc.errors()[0] if exc.errors() else {}
    loc = [str(p) for p in first.get("loc", ()) if p not in ("body", "query", "path", "header")]
    err = InvalidRequest(
        str(first.get("msg", "invalid request")), param=".".join(loc) or None, code="invalid_value"
    )
    return error_response(err, request_id_of(request.scope))


def build_api(config: TollwayConfig, services: Services, admin_token: str | None) -> GatewayApi:
    """The FastAPI app: admin, usage, model list, health and metrics routes, the error
    handlers, and ``app.state`` (what tests and tools reach)."""
    s = services
    app = GatewayApi(
        title="Tollway",
        version="0.1.0",
        description="OpenAI-compatible inference gateway for AI-agent traffic.",
        lifespan=s.lifespan,
        docs_url="/docs",
        redoc_url=None,
    )
    app.include_router(
        admin.router(s.store, admin_token, s.keys.invalidate, frozenset(config.compression))
    )
    app.include_router(usage.admin_router(s.engine, admin_token))
    app.include_router(usage.tenant_router(s.engine, s.auth))
    app.include_router(responses_router(s.stored_responses, s.auth))
    app.include_router(conversations_router(s.conversations, s.auth))
    app.router.routes.extend(openai.routes(s.registry, s.auth))
    app.router.routes.extend(health.routes(s.registry.is_ready))
    metrics = s.metrics

    async def metrics_endpoint(request: Request) -> Response:
        return Response(metrics.render(), media_type=CONTENT_TYPE)

    app.add_route("/metrics", metrics_endpoint, methods=["GET"], include_in_schema=False)

    async def handle_error(request: Request, exc: Exception) -> Response:
        if isinstance(exc, TollwayError):
            metrics.count_error(exc.code)  # admin and usage routes: database failures
        return await handle_tollway_error(request, exc)

    app.add_exception_handler(TollwayError, handle_error)
    app.add_exception_handler(HTTPException, handle_http_exception)
    app.add_exception_handler(RequestValidationError, _handle_validation)
    app.add_exception_handler(Exception, handle_unexpected)
    app.state.registry = s.registry
    app.state.pipeline = s.pipeline
    app.state.store = s.store
    app.state.metrics = s.metrics
    app.state.metering = s.metering
    app.state.budget_resync = s.budget_resync
    app.state.tracer = s.tracer
    app.state.stored_responses = s.stored_responses
    return app


def inference_routes(services: Services) -> RouteTable:
    """The one route table of the inference routes (the dispatcher serves them)."""
    pipeline = services.pipeline
    anthropic = MessagesApi(pipeline)
    responses_api = ResponsesApi(pipeline, services.stored_responses, services.conversations)
    return RouteTable(
        [
            InferenceRoute(
                "/v1/chat/completions", pipeline.chat, "Create a chat completion (OpenAI's API)"
            ),
            InferenceRoute("/v1/completions", pipeline.completions, "Create a completion"),
            InferenceRoute(EMBEDDINGS_PATH, pipeline.embeddings, "Create embeddings"),
            InferenceRoute(
                RESPONSES_PATH, responses_api.create, "Create a response (OpenAI's Responses API)"
            ),
            InferenceRoute(
                MESSAGES_PATH,
                anthropic.messages,
                "Create a message (Anthropic's Messages API)",
                api=ANTHROPIC,
            ),
            InferenceRoute(
                COUNT_TOKENS_PATH,
                anthropic.count_tokens,
                "Count a message's input tokens (Anthropic's Messages API)",
                api=ANTHROPIC,
            ),
        ]
    )


def create_app(config: TollwayConfig, settings: Settings | None = None) -> Gateway:
    """Build the gateway's ASGI app from a validated configuration.

    Three steps: the parts (:func:`build_services`), the FastAPI app of every
    route but the inference ones (:func:`build_api`), and the dispatcher in
    front, with the inference routes' table (:func:`inference_routes`).
    """
    settings = settings or Settings()
    services = build_services(config, settings)
    admin_token = admin_token_of(config, settings)
    app = build_api(config, services, admin_token)
    table = inference_routes(services)
    app.route_table = table
    dispatcher = Dispatcher(
        app,
        table,
        RequestIds(config.server.max_request_id_length),
        max_body_bytes=settings.max_body_bytes or config.server.max_body_bytes,
        admin_check=admin.admin_guard(admin_token),
        authenticate=services.auth.authenticate,
        admin_paths=("/admin/", "/metrics") if config.metrics.require_admin_token else ("/admin/",),
    )
    return Gateway(app, dispatcher)
