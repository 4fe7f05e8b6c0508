"""The ``tollway`` command line, composed from each package's commands (also ``python -m gateway``).

This is the one module at the top of the import graph: it may import every
package, so the packages need not import one another to appear on the command
line (``gateway`` imports no ``simulator``). The rest of :mod:`tollway` is the
bottom layer and imports none of them.
"""

from __future__ import annotations

import typer


def build() -> typer.Typer:
    """The full command line: the gateway's commands plus each package's own."""
    from billing.cli import register as register_billing
    from gateway.cli import app
    from gateway.manifests_cli import register as register_manifests
    from gateway.settings import StoreSettings
    from gateway.tenancy.cli import register as register_tenancy
    from simulator.capacity_cli import register as register_planner
    from simulator.cli import register as register_emulator

    register_tenancy(app)
    register_billing(app, StoreSettings)  # the environment, read in gateway.settings
    register_emulator(app)
    register_planner(app)
    register_manifests(app)
    return app


def main() -> None:
    """Entry point of the ``tollway`` console script."""
    build()()
