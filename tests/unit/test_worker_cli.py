"""``oris worker``'s command line: every option documented with its variable, bad input exit 2."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from oris.cli.main import app

_RUNNER = CliRunner()


def test_every_option_shows_its_environment_variable() -> None:
    result = _RUNNER.invoke(app, ["worker", "--help"], env={"COLUMNS": "300"})
    assert result.exit_code == 0
    for option, variable in (
        ("--server-url", "ORIS_SERVER_URL"),
        ("--worker-id", "ORIS_WORKER_ID"),
        ("--concurrency", "ORIS_WORKER_CONCURRENCY"),
        ("--app", "ORIS_WORKER_APP"),
        ("--shutdown-grace-seconds", "ORIS_WORKER_SHUTDOWN_GRACE_SECONDS"),
    ):
        assert option in result.stdout
        assert variable in result.stdout


@pytest.mark.parametrize(
    ("app_spec", "message"),
    [
        ("tests.unit.test_worker_cli:nothing_here", "has no attribute"),
        ("tests.unit.test_worker_cli:_RUNNER", "neither a Registry"),
        ("no_such_module_anywhere:app", "cannot import"),
        ("missing-colon", "module:attribute"),
        ("oris.worker.registry:Registry", "has no workflows"),
    ],
)
def test_a_bad_app_is_explained_and_exits_2(app_spec: str, message: str) -> None:
    result = _RUNNER.invoke(app, ["worker", "--app", app_spec])
    assert result.exit_code == 2
    assert message in result.stderr


def test_invalid_settings_exit_2_naming_the_variable() -> None:
    result = _RUNNER.invoke(app, ["worker"], env={"ORIS_WORKER_POLL_MAX_INTERVAL_SECONDS": "-1"})
    assert result.exit_code == 2
    assert "ORIS_WORKER_POLL_MAX_INTERVAL_SECONDS" in result.stderr
