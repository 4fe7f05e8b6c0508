"""Public model names and the backends behind them."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

from backends.base import Backend, ShareMeter
from backends.catalog import CatalogBackend
from backends.sglang.pool import SGLangPool
from billing.money import usd_to_micros
from gateway.config import RequestTimeouts, TollwayConfig
from gateway.configrefs import route_serves_embeddings
from tollway.errors import ModelNotFound, UpstreamUnavailable


@dataclass(slots=True, frozen=True)
class ModelEntry:
    """One public model: its name, owner and backend route."""

    name: str
    owned_by: str
    route: str
    created: int
    fallbacks: tuple[str, ...] = ()
    timeouts: RequestTimeouts | None = None
    #: Served on ``/v1/embeddings`` (an embedding pool or catalog model), not on chat.
    embedding: bool = False


class ModelRegistry:
    """Resolves the ``model`` a client sends to the backend that serves it."""

    def __init__(self, config: TollwayConfig, share_meter: ShareMeter | None = None) -> None:
        self.backends: dict[str, Backend] = {
            f"pool:{name}": SGLangPool(name, pool, share_meter=share_meter)
            for name, pool in config.pools.items()
        }
        self.catalog: dict[str, CatalogBackend] = {
            f"catalog:{name}": CatalogBackend(name, entry) for name, entry in config.catalog.items()
        }
        self.backends.update(self.catalog)
        created = int(time.time())
        self.models: dict[str, ModelEntry] = {
            name: ModelEntry(
                name=name,
                owned_by=m.owned_by or self._owner(m.route),
                route=m.route,
                created=created,
                fallbacks=tuple(m.fallbacks),
                timeouts=m.timeouts,
                embedding=route_serves_embeddings(config, m.route),
            )
            for name, m in config.models.items()
        }

    def _owner(self, route: str) -> str:
        backend = self.catalog.get(route)
        return backend.owned_by if backend is not None else "tollway"

    def provider_cost_micros(self, route: str | None, usage: dict[str, Any] | None) -> int | None:
        """What a catalog provider charges for a request (None for pools)."""
        backend = self.catalog.get((route or "").split("/", 1)[0])
        if backend is None or usage is None:
            return None
        return usd_to_micros(backend.prices.cost(usage))

    def entry(self, model: str, *, visible: bool = True) -> ModelEntry:
        """The public model entry; 404 ``model_not_found`` when unknown (or not ``visible``)."""
        entry = self.models.get(model) if visible else None
        if entry is None:
            raise ModelNotFound(
                f"The model `{model}` does not exist or you do not have access to it.",
                param="model",
            )
        return entry

    def backend(self, entry: ModelEntry) -> Backend:
        """The backend serving a model entry."""
        backend = self.backends.get(entry.route)
        if backend is None:
            raise UpstreamUnavailable(
                f"route {entry.route} of model `{entry.name}` has no backend in this gateway"
            )
        return backend

    def routes_for(self, entry: ModelEntry, extra: tuple[str, ...] = ()) -> list[Backend]:
        """The model's backend, then its fallbacks and ``extra`` ones, without repeats.

        Routes without a backend in this gateway (a catalog entry not served yet)
        are skipped; the first route must exist.
        """
        first = self.backend(entry)
        seen, chain = {first.route}, [first]
        for route in (*entry.fallbacks, *extra):
            backend = self.backends.get(route)
            if backend is not None and route not in seen:
                seen.add(route)
                chain.append(backend)
        return chain

    def is_ready(self) -> bool:
        """Ready when at least one backend can take a request."""
        return any(b.is_ready() for b in self.backends.values())

    async def start(self) -> None:
        """Start every backend at once: a pool's first health probe takes SGLang's ~1 s."""
        await asyncio.gather(*(backend.start() for backend in self.backends.values()))

    async def stop(self) -> None:
        for backend in self.backends.values():
            await backend.stop()
