"""Graceful drain on SIGTERM: readiness turns false at once, in-flight work finishes.

:class:`DrainingServer` is uvicorn's ``Server`` with three changes:

* On the first SIGTERM (or SIGINT) it marks its :class:`Drain` as draining
  before anything else, so ``/readyz`` answers 503 from then on. The drain
  reaches the app through the ASGI lifespan state (``scope["state"]``), which
  uvicorn copies into every request's scope; no module-level flag.
* With ``shutdown_delay_s`` > 0 it keeps accepting and serving for that long
  (``/readyz`` 503, everything else as usual) so that load balancers and
  Kubernetes endpoints stop sending before the listening socket closes; a
  second signal skips the rest of the delay.
* uvicorn re-raises the captured signal after its shutdown, so the process would
  die *by* SIGTERM (status -15) even after a clean drain. This server does not:
  a finished drain exits 0.

Then uvicorn's own graceful shutdown runs: the listening socket closes (new
connections are refused), idle keep-alive connections close, in-flight
requests and streams run to completion for at most ``timeout_graceful_shutdown``
seconds (``server.drain_timeout_s``) and are then cancelled, and finally the
lifespan shutdown flushes the usage buffer into the ledger.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
import time
from collections.abc import Generator
from types import FrameType
from typing import Any

import uvicorn
from uvicorn.server import HANDLED_SIGNALS

log = logging.getLogger("tollway")

#: Key of the :class:`Drain` in the ASGI lifespan state (and so in ``scope["state"]``).
DRAIN_STATE_KEY = "tollway.drain"


class Drain:
    """Whether this process is draining, and since when (monotonic seconds)."""

    def __init__(self) -> None:
        self.since: float | None = None

    @property
    def draining(self) -> bool:
        """True from the first shutdown signal on."""
        return self.since is not None

    def begin(self) -> None:
        """Start draining (idempotent)."""
        if self.since is None:
            self.since = time.monotonic()


def is_draining(scope: Any) -> bool:
    """Whether the server that delivered this request's scope is draining."""
    state = scope.get("state") if isinstance(scope, dict) else None
    drain = state.get(DRAIN_STATE_KEY) if isinstance(state, dict) else None
    return isinstance(drain, Drain) and drain.draining


class DrainingServer(uvicorn.Server):
    """uvicorn's server with readiness-first draining and a clean exit status."""

    def __init__(self, config: uvicorn.Config, shutdown_delay_s: float = 0.0) -> None:
        super().__init__(config)
        self.drain = Drain()
        self.shutdown_delay_s = shutdown_delay_s
        self._exit_at: float | None = None

    async def startup(self, sockets: list[Any] | None = None) -> None:
        self.lifespan.state[DRAIN_STATE_KEY] = self.drain
        await super().startup(sockets=sockets)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        first = not self.drain.draining
        self.drain.begin()
        if first:
            log.warning(
                "signal %d: draining (readiness is false; accepting for %gs more, then waiting "
                "at most %ss for in-flight requests)",
                sig,
                self.shutdown_delay_s,
                self.config.timeout_graceful_shutdown,
            )
            if self.shutdown_delay_s > 0:
                self._exit_at = time.monotonic() + self.shutdown_delay_s
                return
        super().handle_exit(sig, frame)

    async def on_tick(self, counter: int) -> bool:
        if self._exit_at is not None and time.monotonic() >= self._exit_at:
            self._exit_at = None
            self.should_exit = True
        return await super().on_tick(counter)

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        """uvicorn's signal capture, without re-raising the signal after the drain."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        originals = {sig: signal.signal(sig, self.handle_exit) for sig in HANDLED_SIGNALS}
        try:
            yield
        finally:
            for sig, handler in originals.items():
                signal.signal(sig, handler)
