"""``create_emulator_app``: an ASGI app that behaves like one SGLang worker.

Routes (SGLang's, except ``/_emulator/faults``)::

    POST /v1/chat/completions   POST /v1/completions   POST /v1/embeddings
    GET  /v1/models
    POST /generate              GET  /health           GET /health_generate
    GET  /get_server_info       GET  /server_info      GET /get_model_info  GET /model_info
    GET  /get_load              GET|POST /flush_cache  GET /metrics
    GET|POST /_emulator/faults

The app's lifespan starts and stops the engine's step loop. In tests, either
run the lifespan (``async with app.router.lifespan_context(app): ...``) or use
:func:`running_emulator`, which does exactly that.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from starlette.applications import Starlette
from starlette.routing import Route

from simulator import chat, completions, embeddings, native
from simulator.clock import Clock
from simulator.config import EmulatorConfig
from simulator.engine import Engine, resolve_model
from simulator.faults import Faults
from simulator.metrics import EmulatorMetrics
from simulator.state import WorkerState


def build_worker(config: EmulatorConfig, *, clock: Clock | None = None) -> WorkerState:
    """Build the engine, metrics and fault state of one worker (no app)."""
    _, model = resolve_model(config)
    name = config.served_model_name or model.hf_name
    metrics = EmulatorMetrics(name)
    engine = Engine(config, metrics=metrics, clock=clock)
    faults = Faults(config.faults, seed=config.seed, on_die=config.on_die)
    return WorkerState(config, engine, metrics, faults, name)


def create_emulator_app(config: EmulatorConfig, *, clock: Clock | None = None) -> Starlette:
    """An ASGI app emulating one SGLang worker as ``config`` describes.

    ``clock`` overrides the time source (default: real time scaled by
    ``config.speed``, or a virtual clock with ``config.instant``).
    """
    state = build_worker(config, clock=clock)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        state.engine.start()
        try:
            yield
        finally:
            await state.engine.stop()

    # An embedding worker (SGLang's --is-embedding) refuses to generate.
    refuse = embeddings.not_generating if config.embedding else None
    routes = [
        Route("/v1/chat/completions", refuse or chat.chat_completions, methods=["POST"]),
        Route("/v1/completions", refuse or completions.completions, methods=["POST"]),
        Route("/v1/embeddings", embeddings.embeddings, methods=["POST"]),
        Route("/v1/models", native.models, methods=["GET"]),
        Route("/generate", refuse or native.generate, methods=["POST", "PUT"]),
        Route("/health", native.health, methods=["GET"]),
        Route("/health_generate", native.health, methods=["GET"]),
        Route("/get_server_info", native.get_server_info, methods=["GET"]),
        Route("/server_info", native.server_info, methods=["GET"]),
        Route("/get_model_info", native.model_info, methods=["GET"]),
        Route("/model_info", native.model_info, methods=["GET"]),
        Route("/get_load", native.get_load, methods=["GET"]),
        Route("/flush_cache", native.flush_cache, methods=["GET", "POST"]),
        Route("/metrics", native.metrics, methods=["GET"]),
        Route("/_emulator/faults", native.faults, methods=["GET", "POST"]),
    ]
    app = Starlette(routes=routes, lifespan=lifespan)
    app.state.worker = state
    return app


@contextlib.asynccontextmanager
async def running_emulator(
    config: EmulatorConfig, *, clock: Clock | None = None
) -> AsyncIterator[Starlette]:
    """Create an emulator app and run its lifespan for the duration of the block."""
    app = create_emulator_app(config, clock=clock)
    async with app.router.lifespan_context(app):
        yield app
