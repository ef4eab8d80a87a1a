"""Command-line arguments of the operator CLI: bad input is a usage error (exit 2) raised
before any request is sent, never a traceback."""

from __future__ import annotations

import pytest
import typer
from typer.testing import CliRunner, Result

from oris.cli.errors import EXIT_USAGE
from oris.cli.main import app
from oris.cli.operator import JsonObject, JsonValue

# Nothing listens on port 9 here: a command that sent a request would exit 3, not 2.
CLOSED_URL = "http://127.0.0.1:9"
_RUNNER = CliRunner()


def oris(*args: str, **env: str | None) -> Result:
    """Run ``oris`` in-process with the API pointed at a closed port."""
    environment: dict[str, str | None] = {
        "ORIS_SERVER_URL": CLOSED_URL,
        "ORIS_API_TOKEN": None,
        "ORIS_REQUEST_TIMEOUT_SECONDS": None,
    }
    environment.update(env)
    return _RUNNER.invoke(app, list(args), env=environment, catch_exceptions=False)


def test_json_values_keep_null_and_strings_as_real_values() -> None:
    assert JsonValue.parse("null").value is None
    assert JsonValue.parse('"approved"').value == "approved"
    assert JsonValue.parse('{"a": [1]}').value == {"a": [1]}
    assert JsonObject.parse('{"strategy": "fixed"}').value == {"strategy": "fixed"}


def test_invalid_json_is_a_bad_parameter_that_explains_quoting() -> None:
    with pytest.raises(typer.BadParameter, match=r"not valid JSON.*quote JSON strings"):
        JsonValue.parse("approved")
    with pytest.raises(typer.BadParameter, match="must be a JSON object, got list"):
        JsonObject.parse("[1, 2]")


@pytest.mark.parametrize(
    ("args", "option"),
    [
        (("jobs", "run", "t1", "--input", "{not json"), "--input"),
        (("jobs", "run", "t1", "--retry-policy", "[1]"), "--retry-policy"),
        (("jobs", "resume", "t1", "--value", "approved"), "--value"),
        (("interrupts", "resume", "int-1", "--value", "{"), "--value"),
        (("jobs", "run", "t1", "--on-timeout", "cancelled"), "--on-timeout"),
        (("jobs", "run", "t1", "--on-timeout", "later", "--timeout-ms", "5"), "--on-timeout"),
        (("jobs", "list", "--status", "sleeping"), "--status"),
        (("jobs", "list", "--limit", "ten"), "--limit"),
        (("keys", "create", "--role", "root"), "--role"),
        (("jobs", "resume", "t1"), "--value"),
    ],
)
def test_bad_arguments_exit_2_without_sending_a_request(args: tuple[str, ...], option: str) -> None:
    result = oris(*args)
    assert result.exit_code == EXIT_USAGE, result.output
    assert option in result.stderr
    assert result.stdout == ""


def test_an_invalid_setting_or_server_url_is_a_usage_error() -> None:
    timeout = oris("jobs", "list", ORIS_REQUEST_TIMEOUT_SECONDS="0")
    assert timeout.exit_code == EXIT_USAGE
    assert "ORIS_REQUEST_TIMEOUT_SECONDS" in timeout.stderr
    url = oris("jobs", "list", "--server-url", "localhost:8080")
    assert url.exit_code == EXIT_USAGE
    assert "invalid server URL 'localhost:8080'" in url.stderr
    smoke_url = oris("smoke", "--server-url", "localhost:8080")
    assert smoke_url.exit_code == EXIT_USAGE


def test_every_command_shows_its_environment_variables_but_never_their_values() -> None:
    for command in (
        ("jobs", "list"),
        ("jobs", "run"),
        ("dlq", "replay"),
        ("audit", "logs"),
        ("keys", "create"),
        ("smoke",),
    ):
        result = oris(*command, "--help", ORIS_API_TOKEN="hunter2-secret", COLUMNS="200")
        assert result.exit_code == 0, result.output
        for name in ("ORIS_SERVER_URL", "ORIS_API_TOKEN", "ORIS_API_KEY_ID", "ORIS_API_KEY"):
            assert name in result.stdout, (command, name)
        assert "--json" in result.stdout
        assert "hunter2-secret" not in result.stdout
