"""An error answer keeps the keep-alive connection usable (a real ``oris serve`` process)."""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import sqlite3
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from oris.config import ServerSettings
from tests.support import running_server

pytestmark = pytest.mark.e2e


def _sql(settings: ServerSettings, statement: str) -> None:
    """Run one statement against the server's database behind its back."""
    if settings.backend.value == "sqlite":
        with contextlib.closing(sqlite3.connect(settings.sqlite_db)) as conn:
            conn.execute(statement)
            conn.commit()
        return
    dsn = settings.effective_postgres_dsn
    assert dsn is not None
    subprocess.run(
        ["psql", dsn, "-q", "-v", "ON_ERROR_STOP=1", "-c", statement],
        check=True,
        capture_output=True,
        env={**os.environ, "PGOPTIONS": f"-c search_path={settings.postgres_schema}"},
    )


@contextlib.contextmanager
def _jobs_table_gone(settings: ServerSettings) -> Iterator[None]:
    """The jobs table renamed away, so reading jobs fails inside the server (a 500)."""
    _sql(settings, "ALTER TABLE runtime_jobs RENAME TO runtime_jobs_away")
    try:
        yield
    finally:
        _sql(settings, "ALTER TABLE runtime_jobs_away RENAME TO runtime_jobs")


def _get(conn: http.client.HTTPConnection, path: str) -> tuple[int, dict[str, str], Any]:
    conn.request("GET", path, headers={"Connection": "keep-alive"})
    response = conn.getresponse()
    body = response.read()
    headers = {k.lower(): v for k, v in response.getheaders()}
    return response.status, headers, json.loads(body) if body else None


def test_a_500_keeps_the_connection_usable(settings: ServerSettings, tmp_path: Path) -> None:
    with running_server(settings, tmp_path) as url:
        parts = urlsplit(url)
        assert parts.hostname is not None and parts.port is not None
        conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=15)
        try:
            status, _, _ = _get(conn, "/v1/jobs")
            assert status == 200
            sock = conn.sock  # the one connection every request below must travel on
            assert sock is not None
            with _jobs_table_gone(settings):
                status, headers, body = _get(conn, "/v1/jobs")
                assert status == 500
                assert body["error"]["code"] == "internal"
                assert headers.get("connection", "").lower() != "close"
                assert conn.sock is sock
                # The same connection still answers (an error again: the table is still gone).
                status, _, body = _get(conn, "/v1/jobs")
                assert status == 500 and body["error"]["code"] == "internal"
                assert conn.sock is sock
            status, _, body = _get(conn, "/v1/jobs")
            assert status == 200, body
            assert body["data"]["total"] == 0
            assert conn.sock is sock
        finally:
            conn.close()
