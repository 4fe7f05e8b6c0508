"""The gateway's own commands of the ``tollway`` command line (``serve``, ``db``, ...).

The whole command line, with the other packages' commands, is composed in
:mod:`tollway.cli`; this module imports no other package's commands.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

from tollway.errors import ConfigError

app = typer.Typer(
    name="tollway",
    help="Tollway: an OpenAI-compatible inference gateway for AI-agent traffic.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _fail(message: str) -> typer.Exit:
    # One line whatever the terminal's width: scripts and log collectors read it whole.
    console = Console(stderr=True, soft_wrap=True)
    console.print(f"[bold red]error:[/] {escape(message)}", highlight=False)
    return typer.Exit(code=2)


@app.command()
def serve(
    config: Annotated[Path, typer.Option("--config", "-c", help="YAML configuration file.")],
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
    workers: Annotated[int, typer.Option(min=1, help="Worker processes.")] = 1,
    log_level: Annotated[
        str | None,
        typer.Option(
            help="Log level of every logger (over TOLLWAY_LOG_LEVEL and the config's "
            "logging.level; default info)."
        ),
    ] = None,
) -> None:
    """Serve the gateway with a configuration file."""
    from gateway.server import serve as run

    try:  # the database it uses is logged once logging is set up
        run(str(config), host, port, workers, log_level)
    except ConfigError as exc:
        raise _fail(f"invalid configuration: {exc.message}") from None


@app.command()
def demo(
    port: Annotated[int, typer.Option(help="Gateway port.")] = 8000,
    data_dir: Annotated[
        Path, typer.Option("--data-dir", help="Where the demo keeps its config and data.")
    ] = Path(".tollway/demo"),
    speed: Annotated[float, typer.Option(help="Emulated GPU speed factor (1 = real time).")] = 1.0,
) -> None:
    """Run the whole system on this machine: emulated pools, the gateway, a demo key."""
    from gateway.demo import run_demo

    sys.exit(run_demo(port=port, data_dir=data_dir, speed=speed))


def _announce_database(database_url: str | None) -> str:
    """The database a command uses (``--database-url``, ``DATABASE_URL``, else SQLite
    under the data directory), named on stderr (see ``database_notice``)."""
    from gateway.database import default_database_url
    from gateway.settings import Settings
    from tollway.database import database_notice

    settings = Settings()
    chosen = database_url or settings.database_url
    url = chosen or default_database_url(settings.data_dir)
    for line in database_notice(url, None if chosen else settings.data_dir):
        typer.echo(line, err=True)
    return url


db_app = typer.Typer(help="The SQL database.", no_args_is_help=True)


@db_app.command("upgrade")
def db_upgrade(
    database_url: Annotated[
        str | None, typer.Option("--database-url", help="SQLAlchemy URL (default: DATABASE_URL).")
    ] = None,
) -> None:
    """Apply every pending migration (every command that opens the database does too,
    one process at a time)."""
    import asyncio

    from gateway.database import create_engine, migrate

    url = _announce_database(database_url)

    async def run() -> None:
        engine = create_engine(url)
        try:
            await migrate(engine)
        finally:
            await engine.dispose()

    try:
        asyncio.run(run())
    except ConfigError as exc:  # pragma: no cover - configuration problems
        raise _fail(exc.message) from None
    except Exception as exc:  # noqa: BLE001 - report, exit non-zero
        raise _fail(f"migration failed: {exc}") from None
    typer.echo("database is up to date")


app.add_typer(db_app, name="db")
