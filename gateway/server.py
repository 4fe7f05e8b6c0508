"""Running the gateway under uvicorn (uvloop event loop, httptools HTTP parser).

One process (``--workers 1``) runs :class:`gateway.drain.DrainingServer`, which
turns readiness false at the first SIGTERM and drains within
``server.drain_timeout_s``. With ``--workers N`` uvicorn's supervisor forwards
SIGTERM to each worker process, which runs uvicorn's own server: each drains
within the same timeout and flushes its usage buffer, but ``/readyz`` does not
turn 503 first (see docs/reliability.md). Every process speaks HTTP through
:class:`gateway.protocol.GatewayHttpProtocol` with the configured input limits.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
import tempfile

from uvicorn.config import STARTUP_FAILURE
from uvicorn.supervisors import Multiprocess

from backends.catalog import effective_prices
from billing.pricing import load_price_book
from gateway.app import Gateway, create_app
from gateway.config import ServerConfig, TollwayConfig, load_config
from gateway.database import default_database_url
from gateway.drain import DrainingServer
from gateway.logconfig import setup_gateway_logging
from gateway.protocol import ConnectionLimits, GatewayHttpProtocol, GatewayServerConfig
from gateway.settings import Settings
from tollway.database import database_notice
from tollway.errors import ConfigError

log = logging.getLogger("tollway")


def app_from_environment() -> Gateway:
    """App factory for uvicorn workers: the config path comes from ``TOLLWAY_CONFIG``."""
    settings = Settings()
    if settings.config is None:
        raise ConfigError("TOLLWAY_CONFIG is not set")
    config = load_config(settings.config)
    setup_gateway_logging(config.logging, settings, flag_level=None)
    return create_app(config, settings)


def uvicorn_config(
    server: ServerConfig, host: str, port: int, workers: int, log_level: str
) -> GatewayServerConfig:
    """The uvicorn configuration of a gateway: protocol, limits, timeouts."""
    return GatewayServerConfig(
        "gateway.server:app_from_environment",
        limits=ConnectionLimits(
            max_header_bytes=server.max_header_bytes,
            max_headers=server.max_headers,
            header_read_timeout_s=server.header_read_timeout_s,
            body_read_timeout_s=server.body_read_timeout_s,
            client_write_timeout_s=server.client_write_timeout_s,
        ),
        factory=True,
        host=host,
        port=port,
        workers=workers,
        loop="uvloop",
        http=GatewayHttpProtocol,
        lifespan="on",
        access_log=False,
        log_config=None,  # gateway.logconfig sets up every logger, uvicorn's included
        proxy_headers=False,  # nothing reads the client address; skip the wrapper
        log_level=log_level,
        timeout_keep_alive=server.keep_alive_timeout_s,
        timeout_graceful_shutdown=server.drain_timeout_s,
        h11_max_incomplete_event_size=server.max_header_bytes,
    )


def check_referenced_files(config: TollwayConfig) -> None:
    """What the config points at, checked before serving: one line naming the key, not a
    traceback from the app's start (every catalog entry has a price, the price book reads)."""
    for name, entry in config.catalog.items():
        effective_prices(entry, name=name)
    if config.pricing is not None:
        load_price_book(config.pricing)


def serve(
    config_path: str, host: str, port: int, workers: int, log_level: str | None = None
) -> None:
    """Validate the config, then serve it (``workers`` processes share the port)."""
    config = load_config(config_path)  # fail fast, in the parent, with the bad key's path
    check_referenced_files(config)
    settings = Settings()
    log_level = setup_gateway_logging(config.logging, settings, flag_level=log_level).level
    url = settings.database_url or default_database_url(settings.data_dir)
    for line in database_notice(url, None if settings.database_url else settings.data_dir):
        log.info("%s", line)  # which database, in the log's own format
    os.environ["TOLLWAY_CONFIG"] = os.path.abspath(config_path)
    os.environ["TOLLWAY_LOG_LEVEL"] = log_level  # worker processes log at the same level
    os.environ.setdefault("TOLLWAY_GC_TUNING", "1")
    own_metrics_dir: str | None = None
    if workers > 1 and "PROMETHEUS_MULTIPROC_DIR" not in os.environ:
        # Counters and histograms aggregated across the worker processes.
        own_metrics_dir = tempfile.mkdtemp(prefix="tollway-metrics-")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = own_metrics_dir
    uv = uvicorn_config(config.server, host, port, workers, log_level)
    if workers > 1:
        try:
            Multiprocess(uv, sockets=[uv.bind_socket()]).run()
        finally:
            if own_metrics_dir is not None:  # ours, made above: gone with the workers
                shutil.rmtree(own_metrics_dir, ignore_errors=True)
        return
    server = DrainingServer(uv, shutdown_delay_s=config.server.shutdown_delay_s)
    server.run()
    if not server.started:
        sys.exit(STARTUP_FAILURE)
