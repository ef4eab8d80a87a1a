"""``python -m oris`` runs the ``oris`` command."""

from oris.cli.main import main

main()
