"""How the operator commands attach to the root ``oris`` app."""

from __future__ import annotations

from typer.testing import CliRunner

from oris.cli.main import app

_RUNNER = CliRunner()


def test_the_root_app_has_every_operator_group_and_smoke() -> None:
    names = {info.name for info in app.registered_groups}
    assert {"jobs", "interrupts", "dlq", "audit", "keys"} <= names
    assert "smoke" in {info.name for info in app.registered_commands}
