"""``emulate``: run one emulated SGLang worker over HTTP (uvicorn).

``register(app)`` adds the command to a typer app (``tollway emulate``);
``python -m simulator emulate ...`` runs it standalone.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
from collections.abc import AsyncIterator
from enum import StrEnum
from typing import Annotated

import typer
import uvicorn
from starlette.applications import Starlette

from gpu_catalog.specs import MODELS
from simulator.app import create_emulator_app
from simulator.config import EmulatorConfig, FaultConfig
from simulator.timings import ApiTimings

#: Exit status of a worker killed by the ``die_after`` fault.
DIE_EXIT_CODE = 70
#: SGLang's timings, the defaults of the timing options.
DEFAULT_TIMINGS = ApiTimings()


class GpuChoice(StrEnum):
    """GPUs the performance model knows."""

    h100 = "h100"
    h200 = "h200"
    a100 = "a100"
    l4 = "l4"


def _die() -> None:
    # Exit for real, shortly after the answer that reached the limit has been flushed.
    asyncio.get_running_loop().call_later(0.05, os._exit, DIE_EXIT_CODE)


def _announce(app: Starlette, config: EmulatorConfig) -> None:
    inner = app.router.lifespan_context

    @contextlib.asynccontextmanager
    async def lifespan(a: Starlette) -> AsyncIterator[None]:
        async with inner(a):
            worker = a.state.worker
            print(
                f"SGLang emulator ready on http://{config.host}:{config.port} "
                f"(model={worker.served_model_name}, gpu={config.gpu}, tp={config.tp}, "
                f"max_total_num_tokens={worker.engine.max_total_num_tokens})",
                flush=True,
            )
            yield

    app.router.lifespan_context = lifespan


def emulate(
    gpu: Annotated[GpuChoice, typer.Option(help="GPU to emulate.")] = GpuChoice.h100,
    model: Annotated[
        str, typer.Option(help=f"Model from the catalog: {', '.join(sorted(MODELS))}.")
    ] = "llama-3.1-8b-instruct",
    tp: Annotated[int, typer.Option(min=1, help="Tensor-parallel degree.")] = 1,
    weights_dtype: Annotated[str, typer.Option(help="Weights dtype (bf16, fp8, ...).")] = "bf16",
    kv_dtype: Annotated[str, typer.Option(help="KV-cache dtype (bf16, fp8).")] = "bf16",
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 30000,
    max_total_tokens: Annotated[
        int | None, typer.Option(min=1, help="KV pool size in tokens (default: computed).")
    ] = None,
    mem_fraction_static: Annotated[
        float | None, typer.Option(min=0.0, max=1.0, help="SGLang's --mem-fraction-static.")
    ] = None,
    max_running_requests: Annotated[int | None, typer.Option(min=1)] = None,
    context_length: Annotated[int | None, typer.Option(min=2)] = None,
    speed: Annotated[
        float, typer.Option(min=1e-6, help="Run N times faster than real time.")
    ] = 1.0,
    instant: Annotated[
        bool, typer.Option(help="Answer at once (latencies still accounted).")
    ] = False,
    served_model_name: Annotated[str | None, typer.Option(help="Name in /v1/models.")] = None,
    embedding: Annotated[
        bool,
        typer.Option(help="An embedding worker (SGLang's --is-embedding): /v1/embeddings only."),
    ] = False,
    dimensions: Annotated[
        int | None,
        typer.Option(min=1, help="Size of the embeddings (default: the model's hidden size)."),
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed of outputs and fault draws.")] = 0,
    error_rate: Annotated[
        float, typer.Option(min=0.0, max=1.0, help="Fraction answered 500.")
    ] = 0.0,
    added_latency_ms: Annotated[
        float, typer.Option(min=0.0, help="Delay before each request.")
    ] = 0.0,
    hang: Annotated[bool, typer.Option(help="Accept requests and never answer.")] = False,
    die_after: Annotated[
        int | None, typer.Option(min=0, help="Exit the process after N answered requests.")
    ] = None,
    cut_stream_after: Annotated[
        int | None, typer.Option(min=0, help="Drop streams after N chunks (no [DONE]).")
    ] = None,
    health_wait_s: Annotated[
        float, typer.Option(min=0.0, help="Wait before /health answers (SGLang: 1 s).")
    ] = DEFAULT_TIMINGS.health_wait_s,
    health_generation: Annotated[
        bool,
        typer.Option(help="/health generates a token and waits, as SGLang does by default."),
    ] = DEFAULT_TIMINGS.health_generation,
    startup_s: Annotated[
        float, typer.Option(min=0.0, help="Answer /health 503 this long after start.")
    ] = DEFAULT_TIMINGS.startup_s,
    stream_abort_delay_s: Annotated[
        float,
        typer.Option(min=0.0, help="Abort a stream this long after its client left (SGLang: 2 s)."),
    ] = DEFAULT_TIMINGS.stream_abort_delay_s,
    disconnect_check_s: Annotated[
        float,
        typer.Option(
            min=0.001,
            help="A non-streamed request without output checks its client this often "
            "(SGLang: 4 s).",
        ),
    ] = DEFAULT_TIMINGS.wait_timeout_s,
) -> None:
    """Run an SGLang-compatible worker emulator (no GPU needed)."""
    try:
        config = EmulatorConfig(
            gpu=gpu.value,
            model=model,
            tp=tp,
            weights_dtype=weights_dtype,
            kv_dtype=kv_dtype,
            served_model_name=served_model_name,
            embedding=embedding,
            dimensions=dimensions,
            max_total_tokens=max_total_tokens,
            mem_fraction_static=mem_fraction_static,
            max_running_requests=max_running_requests,
            context_length=context_length,
            speed=speed,
            instant=instant,
            host=host,
            port=port,
            seed=seed,
            faults=FaultConfig(
                error_rate=error_rate,
                added_latency_ms=added_latency_ms,
                hang=hang,
                die_after=die_after,
                cut_stream_after=cut_stream_after,
            ),
            timings=ApiTimings(
                health_wait_s=health_wait_s,
                health_generation=health_generation,
                startup_s=startup_s,
                stream_abort_delay_s=stream_abort_delay_s,
                wait_timeout_s=disconnect_check_s,
            ),
            on_die=_die,
        )
        app = create_emulator_app(config)
    except (KeyError, ValueError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(code=2) from exc
    _announce(app, config)
    loop = "uvloop" if sys.platform != "win32" else "asyncio"
    uvicorn.run(app, host=host, port=port, loop=loop, http="httptools", log_level="warning")


def register(app: typer.Typer) -> None:
    """Add the ``emulate`` command to ``app``."""
    app.command("emulate")(emulate)
