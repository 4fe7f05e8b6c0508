"""``python -m gateway`` runs the ``tollway`` command line (composed in :mod:`tollway.cli`)."""

from tollway.cli import main

main()
