"""Exit codes and error printing shared by every command."""

from __future__ import annotations

import sys
from typing import NoReturn

import typer

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_UNREACHABLE = 3


def fail(message: str, code: int = EXIT_FAILURE) -> NoReturn:
    """Print ``oris: <message>`` to stderr and exit."""
    print(f"oris: {message}", file=sys.stderr)
    raise typer.Exit(code)
