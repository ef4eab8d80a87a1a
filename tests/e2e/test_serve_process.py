"""``oris serve`` and ``oris db`` as real processes."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import httpx
import pytest

from oris.config import ServerSettings
from oris.store.schema import code_version
from tests.support import oris_command, running_server, server_env, wait_until

pytestmark = pytest.mark.e2e


def oris(settings: ServerSettings, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """Run one ``oris`` command to completion."""
    return subprocess.run(
        [*oris_command(), *args],
        env=server_env(settings, **env),
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_db_commands_upgrade_report_and_check(settings: ServerSettings) -> None:
    assert oris(settings, "db", "current").stdout.strip() == "0"
    check = oris(settings, "db", "check")
    assert check.returncode != 0
    assert "oris db upgrade" in check.stderr
    upgrade = oris(settings, "db", "upgrade")
    assert upgrade.returncode == 0, upgrade.stderr
    assert oris(settings, "db", "current").stdout.strip() == str(code_version())
    assert oris(settings, "db", "check").returncode == 0


def test_serve_runs_the_quickstart_flow(settings: ServerSettings, tmp_path: Path) -> None:
    with running_server(settings, tmp_path) as url:
        health = httpx.get(f"{url}/healthz").json()
        assert health["status"] == "ok"
        run = httpx.post(
            f"{url}/v1/jobs/run",
            json={
                "thread_id": "ops-smoke-1",
                "input": "hello",
                "idempotency_key": "ops-smoke-key-1",
            },
        )
        assert run.status_code == 200
        assert run.json()["data"]["status"] == "queued"
        state = httpx.get(f"{url}/v1/jobs/ops-smoke-1").json()["data"]
        assert state["status"] == "queued"


def test_serve_refuses_a_newer_schema_quickly_naming_both_versions(
    settings: ServerSettings, tmp_path: Path
) -> None:
    assert oris(settings, "db", "upgrade").returncode == 0
    _insert_future_version(settings)
    started = time.monotonic()
    result = oris(settings, "serve", ORIS_SERVER_ADDR="127.0.0.1:0")
    assert result.returncode != 0
    assert time.monotonic() - started < 30
    assert f"schema version 42 is newer than supported {code_version()}" in result.stderr
    upgrade = oris(settings, "db", "upgrade")
    assert upgrade.returncode != 0
    assert "42" in upgrade.stderr


def _insert_future_version(settings: ServerSettings) -> None:
    import asyncio

    from oris.services.bootstrap import open_database
    from oris.store.tables import schema_migrations

    async def go() -> None:
        database = open_database(settings)
        async with database.write() as conn:
            await conn.execute(
                schema_migrations.insert().values(version=42, name="future", applied_at_ms=1)
            )
        await database.dispose()

    asyncio.run(go())


def test_serve_on_an_old_postgres_schema_asks_for_db_upgrade(
    backend: str, settings: ServerSettings
) -> None:
    if backend != "postgres":
        pytest.skip("PostgreSQL-only rule")
    result = oris(
        settings, "serve", ORIS_POSTGRES_REQUIRE_SCHEMA="true", ORIS_SERVER_ADDR="127.0.0.1:0"
    )
    assert result.returncode != 0
    assert "oris db upgrade" in result.stderr


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        (
            {"ORIS_RUNTIME_BACKEND": "mysql"},
            "invalid ORIS_RUNTIME_BACKEND='mysql'. expected one of: sqlite, postgres",
        ),
        (
            {"ORIS_RUNTIME_BACKEND": "postgres", "ORIS_POSTGRES_DSN": ""},
            "requires ORIS_POSTGRES_DSN",
        ),
        ({"ORIS_POSTGRES_REQUIRE_SCHEMA": "ture"}, "ORIS_POSTGRES_REQUIRE_SCHEMA"),
    ],
)
def test_bad_configuration_fails_fast_with_a_clear_message(
    settings: ServerSettings, env: dict[str, str], expected: str
) -> None:
    result = oris(settings, "serve", **env)
    assert result.returncode == 2
    assert expected in result.stderr
    assert "Traceback" not in result.stderr


def test_unreachable_postgres_never_prints_the_password(settings: ServerSettings) -> None:
    dsn = "postgresql://oris:s3cret-pw@127.0.0.1:1/oris"
    result = oris(settings, "serve", ORIS_RUNTIME_BACKEND="postgres", ORIS_POSTGRES_DSN=dsn)
    assert result.returncode != 0
    assert "unreachable" in result.stderr
    assert "s3cret-pw" not in result.stderr + result.stdout
    assert "Traceback" not in result.stderr


def test_a_non_loopback_bind_without_credentials_is_refused(settings: ServerSettings) -> None:
    result = oris(settings, "serve", ORIS_SERVER_ADDR="0.0.0.0:0")
    assert result.returncode != 0
    assert "refusing to serve" in result.stderr


@pytest.mark.parametrize("addr", ["127.0.0.1:0", "0.0.0.0:0"])
def test_a_blank_bootstrap_token_exits_1_with_a_clean_message(
    settings: ServerSettings, addr: str
) -> None:
    result = oris(settings, "serve", ORIS_SERVER_ADDR=addr, ORIS_API_AUTH_BEARER_TOKEN="   ")
    assert result.returncode == 1, result.stderr
    assert result.stderr.strip().splitlines()[-1] == (
        "oris: ORIS_API_AUTH_BEARER_TOKEN is set but blank (empty or only whitespace): "
        "set a secret or unset it"
    )
    assert "Traceback" not in result.stderr


def test_default_logs_warn_once_and_keep_idle_polls_out(
    settings: ServerSettings, tmp_path: Path
) -> None:
    with running_server(settings, tmp_path) as url:
        for _ in range(3):
            idle = httpx.post(
                f"{url}/v1/workers/poll", json={"worker_id": "idle-1", "wait_ms": 0}, timeout=10
            )
            assert idle.json()["data"]["decision"] == "noop"
        assert httpx.get(f"{url}/v1/jobs", timeout=10).status_code == 200
        (log_path,) = tmp_path.glob("serve-*.log")

        def jobs_line_logged() -> bool:
            return '"route": "/v1/jobs"' in log_path.read_text()

        wait_until(jobs_line_logged, timeout=10, message="the access line of GET /v1/jobs")
        output = log_path.read_text()
    assert output.count("no credentials configured") == 1, output
    assert '"route": "/v1/workers/poll"' not in output
