"""The ``oris`` command.

Start-up cost matters: every operator command is a new process. The modules imported here hold
only option declarations and HTTP-client code; the server and database stack (FastAPI,
uvicorn, SQLAlchemy, the drivers, Alembic) is imported inside the bodies of the commands that
run it (``serve``, ``db``, ``worker``), never at module level. A new command follows the same
rule: register it here, and import anything heavy inside its function.
tests/unit/test_cli_startup.py holds this in place.
"""

from __future__ import annotations

import typer

from oris.cli import db, drill, operator, retention, serve, triage, worker

app = typer.Typer(
    name="oris",
    help="Oris runtime: API server, workers, schema management and operator tools.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.command("serve")(serve.serve)
app.command("worker")(worker.worker)
app.command("triage")(triage.triage)
app.add_typer(db.app, name="db")
app.add_typer(drill.app, name="drill")
operator.register(app)
retention.register(app)


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":
    main()
