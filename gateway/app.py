"""The application factory: ``create_app(config)`` builds everything.

No module-level state: the app owns its registry, authenticator and pipeline,
and its lifespan opens and closes upstream connections and health checks.
"""

from __future__ import annotations

import gc
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from gateway.accesslog import AccessLog
from gateway.admitting import Admitter
from gateway.agents import AgentResolver
from gateway.anthropic.api import COUNT_TOKENS_PATH, MESSAGES_PATH, MessagesApi
from gateway.api import admin, health, openai, usage
from gateway.auth import Authenticator, OpenAuthenticator, StaticKeys
from gateway.compressing import Compressor
from gateway.config import TollwayConfig
from gateway.database import create_engine, default_database_url, migrate
from gateway.dispatch import Dispatcher
from gateway.embeddings import EMBEDDINGS_PATH
from gateway.idempotency import build_idempotency
from gateway.limits import BudgetResync, build_admission
from gateway.metering import Metering
from gateway.metrics import CONTENT_TYPE, Metrics
from gateway.outcome import RequestRecord
from gateway.pipeline import InferencePipeline
from gateway.registry import ModelRegistry
from gateway.requestid import RequestIds, request_id_of
from gateway.responses import (
    error_response,
    handle_http_exception,
    handle_tollway_error,
    handle_unexpected,
)
from gateway.routes import InferenceRoute, RouteTable
from gateway.settings import Settings
from gateway.sharedstate import connect_redis
from gateway.speculation import SpeculationGate
from gateway.tenancy.keycache import KeyAuthenticator
from gateway.tenancy.store import TenantStore
from gateway.tracing import OtelTracer, build_tracer
from tollway.errors import InvalidRequest, TollwayError
from tollway.resp import RespClient

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
    ``app.router.lifespan_context``).
    """

    def __init__(self, api: GatewayApi, dispatcher: Dispatcher) -> None:
        self.api = api
        self.dispatcher = dispatcher
        self.state = api.state
        self.router = api.router

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.dispatcher(scope, receive, send)

    def openapi(self) -> dict[str, Any]:
        """The OpenAPI description of the documented routes."""
        return self.api.openapi()


def tune_gc() -> None:
    """Take start-up objects out of the collector's reach; collect young objects less often.

    Measured under load: full collections over every module and config object
    paused all in-flight requests for 60-100 ms every second or so; frozen,
    they cost almost nothing (docs/benchmarks.md).
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(10_000, 20, 20)


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


def _fast_redis(url: str | None, timeout_s: float) -> RespClient | None:
    """The request path's lean Redis client (limits), or None to use redis-py for all."""
    if not url:
        return None
    try:
        return RespClient.from_url(url, timeout_s=timeout_s)
    except ValueError:
        log.info("REDIS_URL's scheme is not redis:// or rediss://; limits use redis-py")
        return None


def create_app(config: TollwayConfig, settings: Settings | None = None) -> Gateway:
    """Build the gateway's ASGI app from a validated configuration."""
    settings = settings or Settings()
    redis = (
        connect_redis(
            settings.redis_url,
            timeout_s=config.limits.redis_timeout_s,
            max_connections=config.limits.redis_max_connections,
        )
        if settings.redis_url
        else None
    )
    fast_redis = _fast_redis(settings.redis_url, config.limits.redis_timeout_s)
    engine = create_engine(settings.database_url or default_database_url(settings.data_dir))
    metering = Metering(
        engine=engine,
        data_dir=settings.data_dir,
        redis=redis,
        pricing_path=config.pricing,
        redis_prefix=config.limits.key_prefix,
        gpu_hour_usd={name: pool.gpu_hour_usd for name, pool in config.pools.items()},
        durable_before_response=config.metering.durable_before_response,
        claim_idle_ms=config.metering.claim_idle_ms,
        writer_linger_s=config.metering.writer_linger_ms / 1000,
        run_writer=config.metering.writer == "inline",
        fast_redis=fast_redis,
        journal=config.metering.journal,
        provisional_grace_s=config.metering.provisional_grace_s,
    )
    registry = ModelRegistry(config, share_meter=metering.accountant)
    metering.provider_cost = registry.provider_cost_micros
    store = TenantStore(engine)
    keys = KeyAuthenticator(store, StaticKeys(config.auth.keys), store.version)
    auth: Authenticator = keys
    if config.auth.mode == "none":
        log.warning("authentication is switched off (auth.mode: none)")
        auth = OpenAuthenticator()
    max_body = settings.max_body_bytes or config.server.max_body_bytes
    agents = AgentResolver(config.agent_types, config.routing, frozenset(config.models))
    speculation = (
        SpeculationGate(
            headroom=config.limits.speculate_headroom,
            max_age_s=config.limits.speculate_max_age_s,
            cooldown_s=config.limits.speculate_cooldown_s,
        )
        if redis is not None and config.limits.speculate
        else None
    )
    metrics = Metrics(
        lambda: registry.backends.values(),
        metering,
        tenant_labels=config.metrics.tenant_labels,
        speculation=speculation,
    )
    access = AccessLog(config.server.access_log)

    def finish(record: RequestRecord) -> None:
        metrics.observe(record)
        access.write(record)

    admission = build_admission(
        config.limits,
        redis,
        on_redis_error=lambda where, exc: metrics.redis_errors.inc(),
        fast=fast_redis,
    )
    admitter = Admitter(admission, metering, speculation=speculation)
    budget_resync = BudgetResync.build(
        config.limits,
        admission,
        engine,
        redis,
        on_round=lambda outcome: metrics.budget_resyncs.labels(outcome).inc(),
    )
    idempotency = build_idempotency(config.idempotency, redis)
    compressor = Compressor(
        config, registry, redis, prefix=config.limits.key_prefix, metering=metering
    )
    tracer = build_tracer(config.tracing)
    pipeline = InferencePipeline(
        auth=auth,
        registry=registry,
        agents=agents,
        max_body_bytes=max_body,
        finish=finish,
        max_json_depth=config.server.max_json_depth,
        max_event_bytes=config.server.max_upstream_event_bytes,
        max_messages=config.server.max_messages,
        metering=metering,
        admitter=admitter,
        idempotency=idempotency if config.idempotency.enabled else None,
        compressor=compressor,
        tracer=tracer,
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await migrate(engine)
        await keys.start()
        await metering.start()
        await registry.start()
        await budget_resync.start()
        if settings.gc_tuning:
            tune_gc()
        try:
            yield
        finally:
            await budget_resync.stop()
            await registry.stop()
            await admitter.drain()
            await idempotency.aclose()
            await metering.stop()
            if isinstance(tracer, OtelTracer):
                tracer.shutdown()
            await keys.stop()
            await engine.dispose()
            if redis is not None:
                await redis.aclose()
            if fast_redis is not None:
                await fast_redis.aclose()

    app = GatewayApi(
        title="Tollway",
        version="0.1.0",
        description="OpenAI-compatible inference gateway for AI-agent traffic.",
        lifespan=lifespan,
        docs_url="/docs",
        redoc_url=None,
    )
    admin_token = admin_token_of(config, settings)
    app.include_router(
        admin.router(store, admin_token, keys.invalidate, frozenset(config.compression))
    )
    app.include_router(usage.admin_router(engine, admin_token))
    app.include_router(usage.tenant_router(engine, auth))
    app.router.routes.extend(openai.routes(registry, auth))
    app.router.routes.extend(health.routes(registry.is_ready))

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
    app.state.registry = registry
    app.state.pipeline = pipeline
    app.state.store = store
    app.state.metrics = metrics
    app.state.metering = metering
    app.state.budget_resync = budget_resync
    app.state.tracer = tracer
    anthropic = MessagesApi(pipeline)
    table = RouteTable(
        [
            InferenceRoute(
                "/v1/chat/completions", pipeline.chat, "Create a chat completion (OpenAI's API)"
            ),
            InferenceRoute("/v1/completions", pipeline.completions, "Create a completion"),
            InferenceRoute(EMBEDDINGS_PATH, pipeline.embeddings, "Create embeddings"),
            InferenceRoute(
                MESSAGES_PATH,
                anthropic.messages,
                "Create a message (Anthropic's Messages API)",
                api="anthropic",
            ),
            InferenceRoute(
                COUNT_TOKENS_PATH,
                anthropic.count_tokens,
                "Count a message's input tokens (Anthropic's Messages API)",
                api="anthropic",
            ),
        ]
    )
    app.route_table = table
    dispatcher = Dispatcher(
        app,
        table,
        RequestIds(config.server.max_request_id_length),
        max_body_bytes=max_body,
        admin_check=admin.admin_guard(admin_token),
        authenticate=auth.authenticate,
        admin_paths=("/admin/", "/metrics") if config.metrics.require_admin_token else ("/admin/",),
    )
    return Gateway(app, dispatcher)
