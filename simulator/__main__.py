"""``python -m simulator emulate ...``."""

from __future__ import annotations

import typer

from simulator.cli import register


def main() -> None:
    """Run the simulator's command line."""
    app = typer.Typer(add_completion=False, no_args_is_help=True, help="Tollway simulator.")
    register(app)

    @app.callback()
    def _root() -> None:
        """Tollway's SGLang emulator and simulators."""

    app()


if __name__ == "__main__":
    main()
