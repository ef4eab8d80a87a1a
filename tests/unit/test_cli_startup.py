"""The ``oris`` command starts without the server and database stack.

Asserted on structure, not on time: a fresh interpreter that imports the CLI, builds it and
prints help (for the root and for an operator command) has not loaded any of the modules
that only ``serve``, ``worker`` and ``db`` need. See docs/performance.md for the figures.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.support import free_port

HEAVY = ("sqlalchemy", "fastapi", "starlette", "uvicorn", "asyncpg", "aiosqlite", "alembic")
# Not needed to build the CLI or print help either: only a command that talks to the API does.
# (pydantic itself is not listed: Typer loads it for some parameter types.)
CLIENT_ONLY = ("httpx", "httptools", "orjson", "pydantic_settings", "prometheus_client")

_PROBE = """
import json, sys
from typer.main import get_command
import oris.cli.main
command = get_command(oris.cli.main.app)
for args in {argv!r}:
    try:
        command.main(args, prog_name="oris", standalone_mode=False)
    except SystemExit:
        pass
print(json.dumps(sorted({{name.split(".")[0] for name in sys.modules}})))
"""


def _loaded_after(*argv: list[str]) -> set[str]:
    result = subprocess.run(
        [sys.executable, "-c", _PROBE.format(argv=list(argv))],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
        # A command that does call the API finds nobody listening.
        env={**os.environ, "ORIS_SERVER_URL": f"http://127.0.0.1:{free_port()}"},
    )
    return set(json.loads(result.stdout.strip().splitlines()[-1]))


HELP = [
    [],
    ["--help"],
    ["jobs", "list", "--help"],
    ["keys", "create", "--help"],
    ["triage", "--help"],
    ["serve", "--help"],
    ["worker", "--help"],
    ["db", "upgrade", "--help"],
    ["drill", "run", "--help"],
]


def _id(argv: list[str]) -> str:
    return " ".join(argv) or "import"


@pytest.mark.parametrize("argv", HELP, ids=_id)
def test_building_the_cli_and_printing_help_loads_neither_server_nor_client(
    argv: list[str],
) -> None:
    loaded = _loaded_after(argv) if argv else _loaded_after()
    assert not loaded & set(HEAVY), sorted(loaded & set(HEAVY))
    assert not loaded & set(CLIENT_ONLY), sorted(loaded & set(CLIENT_ONLY))


@pytest.mark.parametrize("argv", [["drill", "list"], ["jobs", "list", "--limit", "0"]], ids=_id)
def test_commands_that_need_no_database_never_load_its_stack(argv: list[str]) -> None:
    # ``jobs list --limit 0`` is refused before or by the API; either way no database code.
    loaded = _loaded_after(argv)
    assert not loaded & set(HEAVY), sorted(loaded & set(HEAVY))
