"""The ``oris`` command."""

from __future__ import annotations

import typer

from oris.cli import db, drill, serve

app = typer.Typer(
    name="oris",
    help="Oris runtime: API server, workers, schema management and operator tools.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.command("serve")(serve.serve)
app.add_typer(db.app, name="db")
app.add_typer(drill.app, name="drill")


def _register_optional() -> None:
    """Attach command groups that live in their own modules."""
    import importlib

    for module_name, attribute, name in (
        ("oris.cli.worker", "worker", None),
        ("oris.cli.triage", "triage", None),
        ("oris.cli.operator", "register", None),
        ("oris.cli.retention", "register", None),
    ):
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as error:
            if error.name != module_name:
                raise
            continue
        target = getattr(module, attribute)
        if name is None and attribute == "register":
            target(app)
        else:
            app.command(name or attribute)(target)


_register_optional()


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":
    main()
