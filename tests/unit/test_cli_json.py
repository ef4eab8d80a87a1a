"""Every operator and read command accepts ``--json`` and prints JSON with it."""

from __future__ import annotations

import json
from typing import Any

import typer
from typer.testing import CliRunner

from oris.cli.main import app

# Commands where a JSON document makes no sense, and why. Anything else must take --json.
NO_JSON = {
    "serve": "a long-running server process; its output is the structured log",
    "worker": "a long-running worker process; its output is the structured log",
}


# Typer builds its commands on its own copy of Click, so groups are recognised by shape.
def _leaves(command: Any, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Every runnable command below ``command`` as its words after ``oris``."""
    subcommands = getattr(command, "commands", None)
    if subcommands is not None:
        found: list[tuple[str, ...]] = []
        for name, sub in subcommands.items():
            found += _leaves(sub, (*path, name))
        return found
    return [path]


def _command(path: tuple[str, ...]) -> Any:
    command: Any = typer.main.get_command(app)
    for word in path:
        command = command.commands[word]
    return command


def test_the_walk_finds_the_whole_tree() -> None:
    paths = {" ".join(p) for p in _leaves(typer.main.get_command(app))}
    assert {"jobs list", "drill list", "drill run", "db check", "triage", "smoke"} <= paths
    assert set(NO_JSON) <= paths


def test_every_operator_and_read_command_takes_a_json_flag() -> None:
    missing = []
    for path in _leaves(typer.main.get_command(app)):
        name = " ".join(path)
        if name in NO_JSON:
            continue
        options = [p for p in _command(path).params if "--json" in getattr(p, "opts", [])]
        if not options or not getattr(options[0], "is_flag", False):
            missing.append(name)
    assert not missing, f"commands without a --json flag: {missing}"


def test_the_exclusions_are_real_commands_without_json() -> None:
    for name in NO_JSON:
        params = _command((name,)).params
        assert not [p for p in params if "--json" in getattr(p, "opts", [])]


def test_drill_list_json_names_every_drill_and_its_playbook() -> None:
    from oris.drills.catalog import DRILLS

    result = CliRunner().invoke(app, ["drill", "list", "--json"])
    assert result.exit_code == 0, result.output
    listed = json.loads(result.stdout)["drills"]
    assert [d["name"] for d in listed] == list(DRILLS)
    assert all(d["playbook"] and d["fault"] for d in listed)
