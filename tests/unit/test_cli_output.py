"""How operator commands render data for people (no I/O beyond captured stdout)."""

from __future__ import annotations

import io
from typing import Any

import pytest

from oris.cli.output import (
    Column,
    describe_api_error,
    format_value,
    render_fields,
    render_table,
    status_colour,
    truncate,
)
from oris.client.http import ApiError


class FakeTerminal(io.StringIO):
    """A stream that claims to be a terminal."""

    def isatty(self) -> bool:
        return True


def test_values_render_as_text_null_as_dash_and_containers_as_compact_json() -> None:
    assert format_value(None) == "-"
    assert format_value(True) == "true"
    assert format_value(3) == "3"
    assert format_value("") == '""'
    assert format_value("queued") == "queued"
    assert format_value({"a": [1, "é"]}) == '{"a":[1,"é"]}'


def test_truncation_marks_the_cut_and_keeps_one_line() -> None:
    assert truncate("short", 10) == "short"
    assert truncate("a\nb", None) == "a b"
    assert truncate("abcdefghij", 5) == "abcd…"
    assert len(truncate("x" * 100, 20)) == 20


def test_tables_align_columns_under_upper_case_headers(capsys: pytest.CaptureFixture[str]) -> None:
    rows: list[dict[str, Any]] = [
        {"thread_id": "a", "status": "queued", "error": None},
        {"thread_id": "long-thread-id", "status": "failed", "error": {"message": "x" * 80}},
    ]
    columns = [
        Column("thread_id", "thread_id"),
        Column("status", "status", coloured=True),
        Column("error", "error", max_width=20),
    ]
    render_table(rows, columns)
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["THREAD_ID", "STATUS", "ERROR"]
    assert lines[1].split() == ["a", "queued", "-"]
    assert lines[0].index("STATUS") == lines[1].index("queued") == lines[2].index("failed")
    assert lines[2].endswith("…")
    assert "\033[" not in "".join(lines)


def test_an_empty_table_says_so(capsys: pytest.CaptureFixture[str]) -> None:
    render_table([], [Column("id", "id")], empty="(no jobs)")
    assert capsys.readouterr().out == "(no jobs)\n"


def test_fields_print_one_aligned_name_value_line_each(capsys: pytest.CaptureFixture[str]) -> None:
    render_fields({"thread_id": "t1", "status": "queued", "input": {"a": 1}})
    assert capsys.readouterr().out.splitlines() == [
        "thread_id  t1",
        "status     queued",
        'input      {"a":1}',
    ]


def test_colours_only_on_a_terminal_and_never_with_no_color(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("NO_COLOR", raising=False)
    assert status_colour("failed", io.StringIO()) == "failed"
    painted = status_colour("failed", FakeTerminal())
    assert painted.startswith("\033[") and "failed" in painted
    assert status_colour("unknown-word", FakeTerminal()) == "unknown-word"
    monkeypatch.setenv("NO_COLOR", "1")
    assert status_colour("failed", FakeTerminal()) == "failed"


def test_refusals_name_message_status_code_and_request_id() -> None:
    error = ApiError(404, "not_found", "No state found for thread: t", "req-1")
    assert describe_api_error(error) == (
        "No state found for thread: t (status 404, code not_found, request_id req-1)"
    )
    anonymous = ApiError(502, "unexpected_response", "bad gateway", None)
    assert describe_api_error(anonymous).endswith("request_id -)")
