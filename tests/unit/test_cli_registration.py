"""How the operator commands attach to the root ``oris`` app."""

from __future__ import annotations

import typer
from typer.testing import CliRunner

from oris.cli.main import app
from oris.cli.operator import register

_RUNNER = CliRunner()


def test_the_root_app_has_every_operator_group_and_smoke() -> None:
    names = {info.name for info in app.registered_groups}
    assert {"jobs", "interrupts", "dlq", "audit", "keys"} <= names
    assert "smoke" in {info.name for info in app.registered_commands}


def test_an_audit_group_added_by_another_module_keeps_its_commands() -> None:
    root = typer.Typer()
    audit = typer.Typer()

    @audit.command("verify")
    def verify() -> None:
        """Stand-in for another module's ``oris audit verify``."""
        print("verified")

    root.add_typer(audit, name="audit")
    register(root)
    assert [info.name for info in root.registered_groups].count("audit") == 1
    assert _RUNNER.invoke(root, ["audit", "verify"]).stdout == "verified\n"
    help_text = _RUNNER.invoke(root, ["audit", "--help"], env={"COLUMNS": "200"}).stdout
    assert "logs" in help_text
    assert "verify" in help_text
