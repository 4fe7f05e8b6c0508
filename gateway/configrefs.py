"""The references between the configuration's sections, checked after parsing.

A model's route and fallbacks name pools and catalog entries (``pool:<name>``,
``catalog:<name>``) that must exist and serve the same task (embeddings, or chat);
an agent type names a model and maybe a compression policy; the routing names a
default agent type. :func:`check_references` is called by
:func:`gateway.config.parse_config`; a reference that does not resolve raises
:class:`~tollway.errors.ConfigError` with the YAML path of the key.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from tollway.errors import ConfigError

if TYPE_CHECKING:
    from gateway.config import TollwayConfig


def split_route(route: str) -> tuple[str, str]:
    """``(kind, name)`` of a route: ``pool:<name>`` or ``catalog:<name>`` (else ValueError)."""
    kind, sep, name = route.partition(":")
    if not sep or kind not in ("pool", "catalog") or not name:
        raise ValueError(f"route {route!r} must be 'pool:<name>' or 'catalog:<name>'")
    return kind, name


def route_serves_embeddings(config: TollwayConfig, route: str) -> bool:
    """Whether ``route`` (``pool:<name>`` or ``catalog:<name>``, defined) serves embeddings."""
    kind, name = split_route(route)
    if kind == "pool":
        return config.pools[name].model.embedding
    return config.catalog[name].embedding


def _cross_check(config: TollwayConfig) -> None:
    """References between sections must resolve."""
    for model_name, model in config.models.items():
        targets = [("route", model.route)] + [
            (f"fallbacks[{i}]", f) for i, f in enumerate(model.fallbacks)
        ]
        for key, target in targets:
            kind, name = split_route(target)
            known = config.pools if kind == "pool" else config.catalog
            section = "pools" if kind == "pool" else "catalog"
            if name not in known:
                raise ConfigError(
                    f"{kind} {name!r} is not defined under '{section}'",
                    path=f"models.{model_name}.{key}",
                )
        _same_task(config, model.route, targets, f"models.{model_name}")
    for agent, profile in config.agent_types.items():
        if profile.model not in config.models:
            raise ConfigError(
                f"model {profile.model!r} is not defined under 'models'",
                path=f"agent_types.{agent}.model",
            )
        for i, target in enumerate(profile.fallbacks):
            kind, name = split_route(target)
            if name not in (config.pools if kind == "pool" else config.catalog):
                raise ConfigError(
                    f"{kind} {name!r} is not defined",
                    path=f"agent_types.{agent}.fallbacks[{i}]",
                )
        fallbacks = [(f"fallbacks[{i}]", f) for i, f in enumerate(profile.fallbacks)]
        route = config.models[profile.model].route
        _same_task(config, route, fallbacks, f"agent_types.{agent}")
        if profile.compression is not None and profile.compression not in config.compression:
            raise ConfigError(
                f"compression policy {profile.compression!r} is not defined under 'compression'",
                path=f"agent_types.{agent}.compression",
            )


def _same_task(
    config: TollwayConfig, route: str, targets: list[tuple[str, str]], path: str
) -> None:
    """A model's fallbacks serve what its route serves (embeddings, or chat)."""
    embedding = route_serves_embeddings(config, route)
    for key, target in targets:
        if route_serves_embeddings(config, target) != embedding:
            what = "an embedding" if embedding else "a chat"
            raise ConfigError(
                f"{target} does not serve what {route} serves ({what} model)",
                path=f"{path}.{key}",
            )


def _check_routing(config: TollwayConfig) -> None:
    default = config.routing.default_agent_type
    if default is not None and default not in config.agent_types:
        raise ConfigError(
            f"agent type {default!r} is not defined under 'agent_types'",
            path="routing.default_agent_type",
        )
    if config.routing.unknown_agent_type == "default" and default is None:
        raise ConfigError(
            "'default' needs routing.default_agent_type", path="routing.unknown_agent_type"
        )
    clash = sorted(set(config.agent_types) & set(config.models))
    if clash:
        raise ConfigError(
            f"{clash[0]!r} is both a model and an agent type; aliases must be unambiguous",
            path=f"agent_types.{clash[0]}",
        )


def check_references(config: TollwayConfig) -> None:
    """Raise :class:`~tollway.errors.ConfigError` at the first reference between
    sections that does not resolve (a route, a fallback, an agent type's model or
    compression policy, the routing's default agent type) or that is ambiguous."""
    _cross_check(config)
    _check_routing(config)
