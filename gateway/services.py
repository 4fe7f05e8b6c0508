"""The gateway's parts, built from the configuration: :func:`build_services`.

Everything one process runs (stores and their connections, metering, the
model registry and its pools, authentication, limits, idempotency,
compression, tracing, and the request pipeline over them) is built here,
connecting nothing; :meth:`Services.lifespan` opens connections and starts
background tasks, and closes them in the reverse order. No module-level state.
"""

from __future__ import annotations

import gc
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.accesslog import AccessLog
from gateway.admitting import Admitter
from gateway.agents import AgentResolver
from gateway.auth import Authenticator, OpenAuthenticator, StaticKeys
from gateway.compressing import Compressor
from gateway.config import TollwayConfig
from gateway.database import create_engine, default_database_url, migrate
from gateway.idempotency import IdempotencyCoordinator, build_idempotency
from gateway.limits import BudgetResync, build_admission
from gateway.metering import Metering
from gateway.metrics import Metrics
from gateway.outcome import RequestRecord
from gateway.pipeline import InferencePipeline
from gateway.registry import ModelRegistry
from gateway.responsesapi.conversations import ConversationStore
from gateway.responsesapi.store import ResponseStore
from gateway.settings import Settings
from gateway.sharedstate import connect_redis
from gateway.speculation import SpeculationGate
from gateway.tenancy.keycache import KeyAuthenticator
from gateway.tenancy.store import TenantStore
from gateway.tracing import OtelTracer, Tracer, build_tracer
from tollway.resp import RespClient

log = logging.getLogger("tollway")


def tune_gc() -> None:
    """Take start-up objects out of the collector's reach; collect young objects less often.

    Measured under load: full collections over every module and config object
    paused all in-flight requests for 60-100 ms every second or so; frozen,
    they cost almost nothing (docs/benchmarks.md).
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(10_000, 20, 20)


@dataclass(slots=True)
class Services:
    """Everything one gateway process runs, built by :func:`build_services`.

    Connections and background tasks are opened in :meth:`lifespan` and closed
    there in the reverse order; nothing is module-level.
    """

    settings: Settings
    redis: RespClient | None
    engine: AsyncEngine
    metering: Metering
    registry: ModelRegistry
    store: TenantStore
    keys: KeyAuthenticator
    auth: Authenticator
    metrics: Metrics
    admitter: Admitter
    budget_resync: BudgetResync
    idempotency: IdempotencyCoordinator
    tracer: Tracer
    pipeline: InferencePipeline
    stored_responses: ResponseStore
    conversations: ConversationStore

    @asynccontextmanager
    async def lifespan(self, app: FastAPI) -> AsyncIterator[None]:
        """Start what runs in the background; stop it all, in reverse, at shutdown."""
        await migrate(self.engine)
        await self.keys.start()
        await self.metering.start()
        await self.registry.start()
        await self.budget_resync.start()
        if self.settings.gc_tuning:
            tune_gc()
        try:
            yield
        finally:
            await self.budget_resync.stop()
            await self.registry.stop()
            await self.admitter.drain()
            await self.idempotency.aclose()
            await self.metering.stop()
            if isinstance(self.tracer, OtelTracer):
                self.tracer.shutdown()
            await self.keys.stop()
            await self.engine.dispose()
            if self.redis is not None:
                await self.redis.aclose()


def _metering(
    config: TollwayConfig,
    settings: Settings,
    engine: AsyncEngine,
    redis: RespClient | None,
) -> Metering:
    """Usage records, pricing and the ledger's buffer, per ``metering:``."""
    return Metering(
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
        journal=config.metering.journal,
        provisional_grace_s=config.metering.provisional_grace_s,
    )


def _authenticator(config: TollwayConfig, keys: KeyAuthenticator) -> Authenticator:
    """The tenants' keys, or nobody checked at all with ``auth.mode: none``."""
    if config.auth.mode == "none":
        log.warning("authentication is switched off (auth.mode: none)")
        return OpenAuthenticator()
    return keys


def _speculation(config: TollwayConfig, redis: RespClient | None) -> SpeculationGate | None:
    """The speculative-admission gate (with Redis and ``limits.speculate`` only)."""
    if redis is None or not config.limits.speculate:
        return None
    return SpeculationGate(
        headroom=config.limits.speculate_headroom,
        max_age_s=config.limits.speculate_max_age_s,
        cooldown_s=config.limits.speculate_cooldown_s,
    )


def build_services(config: TollwayConfig, settings: Settings) -> Services:
    """Build every part of the gateway from the configuration, connecting nothing yet."""
    redis = (
        connect_redis(settings.redis_url, timeout_s=config.limits.redis_timeout_s)
        if settings.redis_url
        else None
    )
    engine = create_engine(settings.database_url or default_database_url(settings.data_dir))
    metering = _metering(config, settings, engine, redis)
    registry = ModelRegistry(config, share_meter=metering.accountant)
    metering.provider_cost = registry.provider_cost_micros
    store = TenantStore(engine)
    keys = KeyAuthenticator(store, StaticKeys(config.auth.keys), store.version)
    auth = _authenticator(config, keys)
    speculation = _speculation(config, redis)
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
    stored_responses = ResponseStore.build(
        config.responses, engine, redis, config.limits.key_prefix
    )
    pipeline = InferencePipeline(
        auth=auth,
        registry=registry,
        agents=AgentResolver(config.agent_types, config.routing, frozenset(config.models)),
        max_body_bytes=settings.max_body_bytes or config.server.max_body_bytes,
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
    return Services(
        settings=settings,
        redis=redis,
        engine=engine,
        metering=metering,
        registry=registry,
        store=store,
        keys=keys,
        auth=auth,
        metrics=metrics,
        admitter=admitter,
        budget_resync=budget_resync,
        idempotency=idempotency,
        tracer=tracer,
        pipeline=pipeline,
        stored_responses=stored_responses,
        conversations=ConversationStore(stored_responses),
    )
