"""The backup/restore rehearsal script checks what it claims (PostgreSQL only)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from tests.support import ROOT, free_port

pytestmark = pytest.mark.e2e


def test_rehearsal_restores_and_dispatches(backend: str) -> None:
    if backend != "postgres":
        pytest.skip("the rehearsal is for PostgreSQL")
    from tests.support import require_postgres

    dsn = require_postgres()
    if shutil.which("pg_dump") is None:
        pytest.fail("pg_dump is required (Debian package postgresql-client)")
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("ORIS_")},
        "RUNTIME_SCHEMA": f"rehearsal_{uuid.uuid4().hex[:10]}",
        "REHEARSAL_PORT": str(free_port()),
        "ORIS_BIN": str(Path(sys.executable).parent / "oris"),
    }
    result = subprocess.run(
        [str(ROOT / "scripts" / "rehearse-postgres-backup-restore.sh"), dsn],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "backup_restore_rehearsal=ok" in result.stdout
    assert "FAILED" not in result.stdout
