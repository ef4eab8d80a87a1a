"""How operator commands print: raw JSON for scripts, plain aligned tables for people.

Tables are plain text so that piping them into ``grep``/``awk`` works; colours are added only
when stdout is a terminal (and ``NO_COLOR`` is unset).
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TextIO

if TYPE_CHECKING:
    from oris.client.http import ApiError

MISSING = "-"
ELLIPSIS = "…"
DEFAULT_CELL_WIDTH = 60
COLUMN_GAP = "  "

_RESET = "\033[0m"
_BOLD = "\033[1m"
_RED = "\033[31m"
_GREEN = "\033[32m"
_YELLOW = "\033[33m"
_MAGENTA = "\033[35m"
_CYAN = "\033[36m"

# Statuses of jobs, attempts, leases, interrupts, dead letters and audit results.
_STATUS_COLOURS = {
    "completed": _GREEN,
    "active": _GREEN,
    "ok": _GREEN,
    "success": _GREEN,
    "resumed": _GREEN,
    "requeued": _GREEN,
    "replayed": _GREEN,
    "running": _CYAN,
    "leased": _CYAN,
    "queued": _CYAN,
    "interrupted": _MAGENTA,
    "pending": _MAGENTA,
    "retry_backoff": _YELLOW,
    "cancelled": _YELLOW,
    "disabled": _YELLOW,
    "expired": _YELLOW,
    "revoked": _YELLOW,
    "failed": _RED,
    "failure": _RED,
    "rejected": _RED,
    "denied": _RED,
    "FAIL": _RED,
}


def colours_enabled(stream: TextIO | None = None) -> bool:
    """Whether to colour output written to ``stream`` (stdout by default)."""
    target = sys.stdout if stream is None else stream
    if os.environ.get("NO_COLOR"):
        return False
    isatty = getattr(target, "isatty", None)
    return bool(isatty and isatty())


def _paint(text: str, code: str, stream: TextIO | None = None) -> str:
    return f"{code}{text}{_RESET}" if code and colours_enabled(stream) else text


def bold(text: str, stream: TextIO | None = None) -> str:
    """``text`` in bold on a terminal."""
    return _paint(text, _BOLD, stream)


def status_colour(text: str, stream: TextIO | None = None) -> str:
    """``text`` coloured by the status word it holds (unchanged when not a terminal)."""
    return _paint(text, _STATUS_COLOURS.get(text.strip(), ""), stream)


def print_json(data: Any) -> None:
    """Print ``data`` as indented JSON on stdout (the ``--json`` output of every command)."""
    print(json.dumps(data, indent=2, ensure_ascii=False, default=str))


def format_value(value: Any) -> str:
    """One value as text: ``-`` for null, compact JSON for objects and lists."""
    if value is None:
        return MISSING
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value if value else '""'
    if isinstance(value, int | float):
        return str(value)
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=str)


def truncate(text: str, width: int | None) -> str:
    """Cut ``text`` to ``width`` characters, marking the cut; one line only."""
    flat = text.replace("\r", " ").replace("\n", " ")
    if width is None or len(flat) <= width:
        return flat
    return flat[: max(width - 1, 0)] + ELLIPSIS


@dataclass(frozen=True, slots=True)
class Column:
    """A table column: header, how to read the cell from a row, and an optional width cap."""

    header: str
    key: str | Callable[[Mapping[str, Any]], Any]
    max_width: int | None = None
    coloured: bool = False

    def cell(self, row: Mapping[str, Any]) -> str:
        """The cell text for ``row``, truncated to the column's cap."""
        raw = self.key(row) if callable(self.key) else row.get(self.key)
        return truncate(format_value(raw), self.max_width)


def render_table(
    rows: Sequence[Mapping[str, Any]], columns: Sequence[Column], *, empty: str = "(none)"
) -> None:
    """Print ``rows`` as an aligned table with upper-case headers, or ``empty`` when none."""
    if not rows:
        print(empty)
        return
    cells = [[column.cell(row) for column in columns] for row in rows]
    widths = [
        max(len(column.header), *(len(line[index]) for line in cells))
        for index, column in enumerate(columns)
    ]
    header = COLUMN_GAP.join(
        column.header.upper().ljust(width) for column, width in zip(columns, widths, strict=True)
    )
    print(bold(header.rstrip()))
    for line in cells:
        parts = []
        for column, width, text in zip(columns, widths, line, strict=True):
            padded = text.ljust(width)
            parts.append(status_colour(padded) if column.coloured else padded)
        print(COLUMN_GAP.join(parts).rstrip())


_STATUS_FIELDS = frozenset({"status", "replay_status", "result", "decision", "state"})


def render_fields(data: Mapping[str, Any], keys: Iterable[str] | None = None) -> None:
    """Print one record as ``name  value`` lines (nested values as compact JSON)."""
    names = list(data.keys() if keys is None else keys)
    if not names:
        return
    width = max(len(name) for name in names)
    for name in names:
        text = format_value(data.get(name))
        if name in _STATUS_FIELDS:
            text = status_colour(text)
        print(f"{bold(name.ljust(width))}  {text}")


def heading(title: str) -> None:
    """Print a section title between blocks of output."""
    print()
    print(bold(f"{title}:"))


def describe_api_error(error: ApiError) -> str:
    """``<message> (status N, code C, request_id R)``: what every command prints on refusal."""
    return (
        f"{error.message} (status {error.status}, code {error.code}, "
        f"request_id {error.request_id or MISSING})"
    )
