"""``tollway pool-manifest``: a pool's Kubernetes objects, rendered from the gateway's config.

The pool's entry in the gateway's YAML file is the one source of truth: this
command reads it with :func:`gateway.config.load_config` and renders it with
:mod:`backends.sglang.manifest`. Whether the pool needs SGLang's priority
scheduling follows from the file too: it does when an agent type with a
priority routes to it. ``register(app)`` adds the command to a typer app.
"""

from __future__ import annotations

import json
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml

from backends.sglang.config import PoolConfig
from backends.sglang.launch import LaunchOptions
from backends.sglang.manifest import (
    render_pool_manifest,
    render_pool_scaled_object,
    worker_url_problems,
)
from gateway.config import TollwayConfig, load_config
from tollway.errors import ConfigError


class _Dumper(yaml.SafeDumper):
    """Plain YAML: repeated objects are written out, never as anchors and aliases."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


class OutputFormat(StrEnum):
    """How the objects are printed."""

    yaml = "yaml"
    json = "json"


def pool_needs_priority(config: TollwayConfig, pool: str) -> bool:
    """Whether an agent type with a non-zero priority routes (or falls back) to ``pool``."""
    target = f"pool:{pool}"
    for profile in config.agent_types.values():
        model = config.models[profile.model]
        if profile.priority > 0 and target in (model.route, *model.fallbacks):
            return True
    return False


def _pool(config: TollwayConfig, pool: str) -> PoolConfig:
    if pool not in config.pools:
        known = ", ".join(sorted(config.pools)) or "none"
        raise ConfigError(f"pool {pool!r} is not defined (pools: {known})", path="pools")
    return config.pools[pool]


def render_documents(
    config: TollwayConfig,
    pool: str,
    *,
    name: str | None = None,
    image: str | None = None,
    emulated: bool = False,
    keda: bool = False,
    min_replicas: int = 1,
    options: LaunchOptions | None = None,
) -> list[dict[str, Any]]:
    """The objects ``tollway pool-manifest`` prints for ``pool`` of ``config``."""
    pool_config = _pool(config, pool)
    k8s_name = name or pool
    if keda:
        return [
            render_pool_scaled_object(
                pool_config, k8s_name, pool_name=pool, min_replicas=min_replicas
            )
        ]
    if options is None:
        options = LaunchOptions(priority=pool_needs_priority(config, pool))
    return render_pool_manifest(
        pool_config, k8s_name, pool_name=pool, image=image, options=options, emulated=emulated
    )


def dump_documents(
    documents: list[dict[str, Any]], output: OutputFormat, *, header: str | None = None
) -> str:
    """YAML (a multi-document stream) or JSON (a ``v1/List``) text of ``documents``.

    ``header`` becomes a comment above the YAML (JSON has no comments).
    """
    if output is OutputFormat.json:
        body = {"apiVersion": "v1", "kind": "List", "items": documents}
        return json.dumps(body, indent=2) + "\n"
    text = yaml.dump_all(documents, Dumper=_Dumper, sort_keys=False, explicit_start=True, width=100)
    if header:
        text = "".join(f"# {line}".rstrip() + "\n" for line in header.splitlines()) + text
    return text


def render_header(config: str, pool: str, *, emulated: bool = False, keda: bool = False) -> str:
    """The comment that marks a rendered file and says how to render it again."""
    flags = " --emulated" if emulated else ""
    flags += " --keda" if keda else ""
    return (
        f"Rendered from pool '{pool}' of {config}; do not edit.\n"
        f"Re-render: tollway pool-manifest --config {config} --pool {pool}{flags}"
    )


def pool_manifest(
    config: Annotated[Path, typer.Option("--config", "-c", help="The gateway's YAML file.")],
    pool: Annotated[str, typer.Option(help="Pool name under `pools:`.")],
    output: Annotated[OutputFormat, typer.Option(help="Output format.")] = OutputFormat.yaml,
    name: Annotated[
        str | None, typer.Option(help="Kubernetes name (default: the pool name).")
    ] = None,
    image: Annotated[str | None, typer.Option(help="Container image.")] = None,
    emulated: Annotated[
        bool, typer.Option(help="Run `tollway emulate` workers instead of SGLang (no GPU).")
    ] = False,
    keda: Annotated[bool, typer.Option(help="Print the pool's KEDA ScaledObject instead.")] = False,
    min_replicas: Annotated[
        int, typer.Option(min=0, help="Fewest workers KEDA keeps (with --keda).")
    ] = 1,
    mem_fraction_static: Annotated[
        float | None, typer.Option(min=0.05, max=0.99, help="SGLang's --mem-fraction-static.")
    ] = None,
    max_total_tokens: Annotated[
        int | None, typer.Option(min=1, help="SGLang's --max-total-tokens.")
    ] = None,
    model_path: Annotated[
        str | None, typer.Option(help="Checkpoint overriding the catalog's Hugging Face id.")
    ] = None,
) -> None:
    """Print a pool's Kubernetes objects (StatefulSet + headless Service) from the config."""
    try:
        tollway_config = load_config(config)
        pool_config = _pool(tollway_config, pool)
        options = None
        if mem_fraction_static is not None or max_total_tokens is not None or model_path:
            options = LaunchOptions(
                priority=pool_needs_priority(tollway_config, pool),
                mem_fraction_static=mem_fraction_static,
                max_total_tokens=max_total_tokens,
                model_path=model_path,
            )
        documents = render_documents(
            tollway_config,
            pool,
            name=name,
            image=image,
            emulated=emulated,
            keda=keda,
            min_replicas=min_replicas,
            options=options,
        )
    except ConfigError as exc:
        typer.echo(f"error: {exc.message}", err=True)
        raise typer.Exit(code=2) from None
    for problem in worker_url_problems(pool_config, name or pool):
        typer.echo(f"warning: {problem}", err=True)
    header = render_header(str(config), pool, emulated=emulated, keda=keda)
    typer.echo(dump_documents(documents, output, header=header), nl=False)


def register(app: typer.Typer) -> None:
    """Add the ``pool-manifest`` command to ``app``."""
    app.command("pool-manifest")(pool_manifest)
