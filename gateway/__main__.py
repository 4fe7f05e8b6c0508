"""``python -m gateway`` runs the ``tollway`` command line."""

from gateway.cli import main

main()
